"""The contact center's rows (ivr/store/models.py: CallMenu, EndUser, ContactCenterCall, ...): what
the calls API and the call services both need to know about them, and the calls API's store side
(api/ccai.py speaks HTTP): :func:`plan_call` checks a ``POST /apps/api/v1/calls`` body in the seed's
order and words, :func:`create_call` writes it, :func:`list_calls` / :func:`call_bundle` read calls
and every row their objects show with a fixed number of queries.

An outbound call is handed from the API to the call services through the outbox
(ivr/store/outbox.py), kind :data:`OUTBOUND_CALL`, payload ``{"call": "<ContactCenterCall _id>"}``,
written in the transaction that creates the call: the API never waits for a call, and a call is
never placed twice (the services take it once). An inbound call goes the same way, kind
:data:`INBOUND_CALL`: written when the API creates it, or, for a scheduled call, when the call
services fire it at its ``scheduledAt`` (ivr/store/scheduled.py). Each call gets one such message.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from peewee import fn

from ivr.core.clock import parse_instant
from ivr.core.contact_center.menus import effective_state
from ivr.core.contact_center.vocabulary import (
    AGENT_BUSY_STATUSES,
    CALL_TYPE_NAMES,
    RECORDING_PERMISSION_NAMES,
    VOIP_PROVIDER_ASTERISK,
    AgentAvailability,
    CallStatus,
    CallType,
    MenuState,
    MenuType,
    ParticipantStatus,
    ParticipantType,
    RecordingOption,
    RecordingPermission,
    is_language,
)
from ivr.core.phone import InvalidNumber, parse_number
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.db import on_reader, write_transaction

OUTBOUND_CALL = "cc_outbound"
#: An inbound call to place (dial the end user, queue them for the menu's agents): written when the API
#: creates a "Voice Inbound (API)" call, and when a scheduled call fires (ivr/store/scheduled.py).
INBOUND_CALL = "cc_inbound"


def agent_is_busy(user_id: uuid.UUID) -> bool:
    """The agent has a call assigned, connecting or connected."""
    call = m.ContactCenterCall
    return on_reader(call.select(call.id).where(call.agentId == user_id,
                                                call.status.in_([s.value for s in AGENT_BUSY_STATUSES]))).exists()


def agent_is_available(user: m.User) -> bool:
    return user.agentAvailability == AgentAvailability.AVAILABLE.value and not agent_is_busy(user.id)


def agent_address(user: m.User) -> str | None:
    """Where an agent is rung: their first verified number (E.164 or SIP URI), None without one."""
    number = m.UserIncomingCallNumber
    row = on_reader(number.select(number.phoneNumber, number.sipUri)
                    .where(number.user == user.id, number.isVerified == True)  # noqa: E712 - peewee expression
                    .order_by(number.createdAt, number.id)).first()
    if row is None:
        return None
    return row.phoneNumber or row.sipUri


# -- creating calls (POST /apps/api/v1/calls) ----------------------------------------------------------
#
# A request is planned first (reads only: every check, in the seed's order, with the seed's words),
# then created in one write transaction that checks again what another request could have changed
# meanwhile (the agent's availability, the project's hourly cap).

MAX_INT = 2**31 - 1          # numericId columns are 32-bit integers (PostgreSQL's integer)
_TEXT_LIMIT = 254            # longer emails, ticket ids or numbers match nothing


class CallRequestError(Exception):
    """A request the calls API refuses; ``message`` is the seed's words, ``status`` the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class CallLimitReached(CallRequestError):
    def __init__(self, message: str):
        super().__init__(message, 429)


AGENT_NOT_AVAILABLE = "Agent is not available to take this call"


@dataclass
class CallPlan:
    """What a valid request creates (the rows are written by :func:`create_call`)."""

    project_id: uuid.UUID
    call_type: CallType
    lang: str
    end_user_number: str                       # E.164
    recording_permission: RecordingPermission
    agent_id: uuid.UUID | None = None
    end_user_id: uuid.UUID | None = None       # an existing end user (None: create one if create_end_user)
    create_end_user: bool = False
    ticket_id: str | None = None
    ticket_url: str | None = None
    outbound_number: str | None = None         # E.164
    outbound_choices: list[str] = field(default_factory=list)
    menu_id: uuid.UUID | None = None
    offer_type: str | None = None
    record_requested: bool = False
    parent_call_id: uuid.UUID | None = None
    scheduled_at: dt.datetime | None = None    # naive UTC
    accepted: bool = False                     # 202: the agent chooses the outbound number on the keypad


def _text(value: Any) -> str | None:
    """A string that can be looked up (no NUL, PostgreSQL refuses them; not absurdly long), else None."""
    if not isinstance(value, str) or "\x00" in value or len(value) > _TEXT_LIMIT:
        return None
    return value


def _integer(value: Any) -> int | None:
    """An integer id of the API (a JSON integer, not a bool or a float), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _phone(value: Any, region: str) -> phonenumbers.PhoneNumber | None:
    text = _text(value)
    if text is None or not text.strip():
        return None
    try:
        return parse_number(text, region)
    except InvalidNumber:
        return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


COSTLY_TYPES = (phonenumbers.PhoneNumberType.PREMIUM_RATE, phonenumbers.PhoneNumberType.SHARED_COST)


def _end_user_number(value: Any, region: str, not_well_formed: str) -> str:
    number = _phone(value, region)
    if number is None:
        raise CallRequestError(not_well_formed)
    if phonenumbers.number_type(number) in COSTLY_TYPES:  # toll fraud: Hotline never calls these
        raise CallRequestError("end_user_number is a premium-rate number: Hotline does not call those")
    return _e164(number)


def _lang(body: dict) -> str:
    lang = body.get("lang", "en")
    if lang is None:
        lang = "en"
    if not is_language(lang):
        shown = lang if isinstance(lang, str) else json.dumps(lang)
        raise CallRequestError(f"Language '{shown[:40]}' is not found")
    return lang


def _recording_permission(body: dict) -> RecordingPermission:
    raw = body.get("recording_permission")
    if raw is None:
        return RecordingPermission.NOT_ASKED
    if not isinstance(raw, str) or raw not in RECORDING_PERMISSION_NAMES:
        raise CallRequestError("recording_permission is not valid")
    return RECORDING_PERMISSION_NAMES[raw]


def _ticket(project_id: uuid.UUID, raw: Any) -> tuple[m.CrmTicket, m.EndUser] | None:
    """The project's ticket ``raw`` (a string or an integer) and its end user, if it has a phone."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    ticket_id = _text(str(raw))
    if ticket_id is None:
        return None
    Ticket = m.CrmTicket
    ticket = on_reader(Ticket.select().where(Ticket.project == project_id, Ticket.ticketId == ticket_id)).first()
    if ticket is None:
        return None
    end_user = on_reader(m.EndUser.select().where(m.EndUser.id == ticket.endUserId,
                                                  m.EndUser.project == project_id)).first()
    if end_user is None or not end_user.phoneNumber:
        return None
    return ticket, end_user


def _end_user_by_phone(project_id: uuid.UUID, e164: str) -> m.EndUser | None:
    return on_reader(m.EndUser.select().where(m.EndUser.project == project_id, m.EndUser.phoneNumber == e164)
                     .order_by(m.EndUser.createdAt, m.EndUser.id)).first()


def _outbound_numbers(project_id: uuid.UUID) -> list[m.OutboundPhoneNumber]:
    Number = m.OutboundPhoneNumber
    return list(on_reader(Number.select().where(Number.project == project_id)
                          .order_by(Number.createdAt, Number.id)))


def _default_number(numbers: list[m.OutboundPhoneNumber]) -> m.OutboundPhoneNumber | None:
    """The project's default number, else its only one, else None."""
    default = next((n for n in numbers if n.isDefault), None)
    if default is not None:
        return default
    return numbers[0] if len(numbers) == 1 else None


def plan_call(project_id: uuid.UUID, body: dict, region: str, now: dt.datetime) -> CallPlan:
    """Check a ``POST /apps/api/v1/calls`` body (reads only), in the seed's order; raises
    :class:`CallRequestError` with the first problem's message."""
    raw_type = body.get("call_type")
    call_type = CALL_TYPE_NAMES.get(raw_type) if isinstance(raw_type, str) else None
    if call_type is None:
        raise CallRequestError("Invalid call type")
    if call_type is CallType.OUTBOUND:
        return _plan_outbound(project_id, body, region)
    return _plan_menu_call(project_id, body, region, now, call_type)


def _agent(project_id: uuid.UUID, raw: Any) -> m.User:
    if raw is None or raw == "":
        raise CallRequestError("Agent email required")
    email = _text(raw)
    if email is None or not email.strip():
        raise CallRequestError("Not a valid agent email")
    User = m.User
    agent = on_reader(User.select().where(User.project == project_id, User.isAgent == True,  # noqa: E712
                                          fn.LOWER(User.email) == email.strip().lower())).first()
    if agent is None:
        raise CallRequestError("Not a valid agent email")
    return agent


def _plan_outbound(project_id: uuid.UUID, body: dict, region: str) -> CallPlan:
    agent = _agent(project_id, body.get("agent_email"))
    if not agent_is_available(agent) or agent_address(agent) is None:
        raise CallRequestError(AGENT_NOT_AVAILABLE)
    if not agent.canMakeOutboundCalls:
        raise CallRequestError("Agent does not have access to make calls")
    ticket_raw, number_raw = body.get("ticket_id"), body.get("end_user_number")
    if ticket_raw is None and number_raw is None:
        raise CallRequestError("ticket_id or end_user_number required")
    ticket = end_user = None
    if ticket_raw is not None:  # the ticket wins over end_user_number
        found = _ticket(project_id, ticket_raw)
        if found is None:
            raise CallRequestError("Contact not found")
        ticket, end_user = found
        number = _end_user_number(end_user.phoneNumber, region, "end_user_number is not well-formed")
    else:
        number = _end_user_number(number_raw, region, "end_user_number is not well-formed")
        end_user = _end_user_by_phone(project_id, number)
    numbers = _outbound_numbers(project_id)
    chosen: m.OutboundPhoneNumber | None = None
    if body.get("outbound_number") is not None:
        given = _phone(body["outbound_number"], region)
        if given is None:
            raise CallRequestError("outbound_number is not well-formed")
        chosen = next((n for n in numbers if n.phoneNumber == _e164(given)), None)
        if chosen is None:
            raise CallRequestError("outbound_number is not one of your outbound phone numbers")
    lang = _lang(body)
    # Hotline's addition to the seed: the queue (menu) an outbound call is made for, optional. Its
    # Call Recording Options apply (with recording_permission), and its outbound number is the default.
    menu = _menu(project_id, body["menu_id"]) if body.get("menu_id") is not None else None
    permission = _recording_permission(body)
    plan = CallPlan(project_id, CallType.OUTBOUND, lang, number, permission, agent_id=agent.id,
                    end_user_id=end_user.id if end_user else None,
                    ticket_id=ticket.ticketId if ticket else None, ticket_url=ticket.url if ticket else None,
                    menu_id=menu.id if menu else None, record_requested=_records(menu, permission))
    if chosen is None and menu is not None and menu.outboundPhoneNumberId is not None:
        chosen = next((n for n in numbers if n.id == menu.outboundPhoneNumberId), None)
    if chosen is None:
        chosen = _default_number(numbers)
    if chosen is not None:
        plan.outbound_number = chosen.phoneNumber
    elif not numbers:
        raise CallRequestError("No outbound phone number is configured")
    else:  # several numbers, none the default: the agent chooses one on the keypad when their phone rings
        plan.outbound_choices = [n.phoneNumber for n in numbers]
        plan.accepted = True
    return plan


def _call_by_number(project_id: uuid.UUID, numeric_id: int) -> m.ContactCenterCall | None:
    if not 0 < numeric_id <= MAX_INT:
        return None
    Call = m.ContactCenterCall
    return on_reader(Call.select().where(Call.project == project_id, Call.numericId == numeric_id)).first()


def _menu(project_id: uuid.UUID, raw_menu: Any) -> m.CallMenu:
    """The project's menu of a request's ``menu_id`` (its integer id), or the seed's refusal."""
    menu_number = _integer(raw_menu)
    if menu_number is None:
        raise CallRequestError("menu_id is not well formed")
    Menu = m.CallMenu
    menu = None
    if 0 < menu_number <= MAX_INT:
        menu = on_reader(Menu.select().where(Menu.project == project_id, Menu.numericId == menu_number)).first()
    if menu is None:
        raise CallRequestError(f"menu_id {menu_number} is not found")
    return menu


def _records(menu: m.CallMenu | None, permission: RecordingPermission) -> bool:
    """The menu's (queue's) Call Recording Options: always, or ask and the caller granted it."""
    option = RecordingOption(menu.recordingOption) if menu is not None else RecordingOption.NEVER
    return option is RecordingOption.ALWAYS or (option is RecordingOption.ASK
                                                and permission is RecordingPermission.GRANTED)


def _plan_menu_call(project_id: uuid.UUID, body: dict, region: str, now: dt.datetime,
                    call_type: CallType) -> CallPlan:
    scheduled = call_type is CallType.SCHEDULED
    parent: m.ContactCenterCall | None = None
    parent_checked = False
    raw_call_id = body.get("call_id") if scheduled else None
    if raw_call_id is not None and _integer(raw_call_id) is None:
        raise CallRequestError("call_id is not well formed")

    def parent_call() -> m.ContactCenterCall:
        found = _call_by_number(project_id, raw_call_id)
        if found is None:
            raise CallRequestError(f"call_id {raw_call_id} is not found")
        return found

    raw_menu = body.get("menu_id")
    if raw_menu is None:
        if raw_call_id is None:
            raise CallRequestError("menu_id is required")
        parent, parent_checked = parent_call(), True   # the parent call's menu
        if parent.callMenuId is None:
            raise CallRequestError("menu_id is required")
        menu = on_reader(m.CallMenu.select().where(m.CallMenu.id == parent.callMenuId,
                                                   m.CallMenu.project == project_id)).first()
        if menu is None:
            raise CallRequestError("menu_id is required")
    else:
        menu = _menu(project_id, raw_menu)
    if scheduled:
        if menu.menuType not in (MenuType.MOBILE, MenuType.WEB):
            raise CallRequestError("Only mobile and web menu IDs are permitted")
    elif menu.menuType not in (MenuType.IVR, MenuType.MOBILE):
        raise CallRequestError("Only IVR and mobile menu IDs are permitted")
    if menu.state == MenuState.MANUAL_REDIRECTION:
        raise CallRequestError("Menu is in 'manual redirection' state, can't accept calls")
    try:
        state = effective_state(menu.state, menu.openingHours, menu.timeZone, now)
    except ValueError:  # opening hours the menu's own checks should have refused: the menu is open
        state = MenuState(menu.state)
    if state is MenuState.AFTER_HOURS:
        raise CallRequestError("Menu is in 'after hours' state, can't accept incoming calls")
    lang = _lang(body)
    if lang not in (menu.languages or []):
        raise CallRequestError(f"Language '{lang}' is not available")
    not_well_formed = "end_user_number is not well formed"
    ticket = end_user = None
    if body.get("ticket_id") is not None:
        found = _ticket(project_id, body["ticket_id"])
        if found is None:
            raise CallRequestError("Contact not found")
        ticket, end_user = found
        number = _end_user_number(end_user.phoneNumber, region, not_well_formed)
    else:
        if body.get("end_user_number") is None:
            raise CallRequestError("end_user_number is required")
        number = _end_user_number(body["end_user_number"], region, not_well_formed)
        end_user = _end_user_by_phone(project_id, number)
    if raw_call_id is not None and not parent_checked:
        parent = parent_call()
    scheduled_at = None
    if scheduled:
        raw_at = body.get("scheduled_at")
        if raw_at is None:
            raise CallRequestError("scheduled_at is required")
        scheduled_at = _instant(raw_at)
        if scheduled_at is None:
            raise CallRequestError("scheduled_at is not well formed")
        if scheduled_at <= now:
            raise CallRequestError("scheduled_at must be in the future")
    permission = _recording_permission(body)
    numbers = _outbound_numbers(project_id)
    outbound = None
    given = _phone(body.get("outbound_number"), region)  # the seed: an invalid one means the default
    if given is not None:
        outbound = next((n.phoneNumber for n in numbers if n.phoneNumber == _e164(given)), None)
    if outbound is None and menu.outboundPhoneNumberId is not None:
        outbound = next((n.phoneNumber for n in numbers if n.id == menu.outboundPhoneNumberId), None)
    if outbound is None:
        default = _default_number(numbers)
        outbound = default.phoneNumber if default else None
    return CallPlan(
        project_id, call_type, lang, number, permission,
        end_user_id=end_user.id if end_user else None, create_end_user=end_user is None,
        ticket_id=ticket.ticketId if ticket else None, ticket_url=ticket.url if ticket else None,
        outbound_number=outbound, menu_id=menu.id, offer_type=menu.offerType,
        record_requested=_records(menu, permission), parent_call_id=parent.id if parent else None, scheduled_at=scheduled_at)


def _instant(raw: Any) -> dt.datetime | None:
    """An ISO 8601 date-time as naive UTC (without an offset: UTC), else None."""
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        return None


def create_call(plan: CallPlan, max_per_hour: int) -> uuid.UUID:
    """The call of a plan, its participants and (outbound) its outbox message, in one write transaction.

    The agent's availability is checked again under a lock (PostgreSQL: the user's row, FOR UPDATE;
    SQLite: the write lock, taken when the transaction begins), so two requests never assign one agent
    twice; the project's cap of calls per hour (``max_per_hour``, 0: none) likewise under the project's row.
    """
    now = m.utcnow()
    Call = m.ContactCenterCall
    with write_transaction():
        locking = bool(m.database.obj.for_update)
        if locking and (max_per_hour or plan.create_end_user):  # one such writer per project at a time
            list(m.Project.select(m.Project.id).where(m.Project.id == plan.project_id).for_update())
        if max_per_hour:
            made = Call.select().where(Call.project == plan.project_id,
                                       Call.createdAt > now - dt.timedelta(hours=1)).count()
            if made >= max_per_hour:
                raise CallLimitReached(f"This project created {max_per_hour} contact-center calls in the last hour "
                                       "(notify.max_calls_per_hour): try again later.")
        agent = None
        address = None
        if plan.agent_id is not None:
            query = m.User.select().where(m.User.id == plan.agent_id, m.User.project == plan.project_id)
            agent = (query.for_update() if locking else query).first()
            address = agent_address(agent) if agent is not None else None
            if agent is None or not agent.isAgent or not agent_is_available(agent) or address is None:
                raise CallRequestError(AGENT_NOT_AVAILABLE)
            if plan.call_type is CallType.OUTBOUND and not agent.canMakeOutboundCalls:  # revoked meanwhile
                raise CallRequestError("Agent does not have access to make calls")
        end_user_id = plan.end_user_id
        if end_user_id is None and plan.create_end_user:  # unless a request just before created them
            EndUser = m.EndUser
            existing = (EndUser.select(EndUser.id).where(EndUser.project == plan.project_id,
                                                         EndUser.phoneNumber == plan.end_user_number)
                        .order_by(EndUser.createdAt, EndUser.id).first())
            end_user_id = existing.id if existing is not None else \
                EndUser.create(project=plan.project_id, phoneNumber=plan.end_user_number).id
        outbound = plan.call_type is CallType.OUTBOUND
        status = (CallStatus.ASSIGNED if outbound else
                  CallStatus.SCHEDULED if plan.call_type is CallType.SCHEDULED else CallStatus.QUEUED)
        call = Call.create(
            project=plan.project_id, callType=plan.call_type.value, status=status.value, lang=plan.lang,
            parentCallId=plan.parent_call_id, menu=plan.menu_id, agentId=plan.agent_id, endUser=end_user_id,
            endUserNumber=plan.end_user_number, outboundNumber=plan.outbound_number,
            outboundChoices=list(plan.outbound_choices), ticketId=plan.ticket_id, ticketUrl=plan.ticket_url,
            queuedAt=now if status is CallStatus.QUEUED else None,
            assignedAt=now if outbound else None, scheduledAt=plan.scheduled_at,
            recordingPermission=plan.recording_permission.value, recordRequested=plan.record_requested,
            offerType=plan.offer_type, voipProvider=VOIP_PROVIDER_ASTERISK, createdAt=now, updatedAt=now)
        Participant = m.ContactCenterParticipant
        if agent is not None:
            Participant.create(project=plan.project_id, call=call.id, type=ParticipantType.AGENT.value,
                               status=ParticipantStatus.WAITING.value, userId=agent.id, address=address)
        Participant.create(project=plan.project_id, call=call.id, type=ParticipantType.END_USER.value,
                           status=ParticipantStatus.WAITING.value, endUser=end_user_id,
                           address=plan.end_user_number)
        if outbound:  # the call services place it
            outbox.put(OUTBOUND_CALL, {"call": str(call.id)})
        elif status is CallStatus.QUEUED:  # an inbound call: the call services dial the end user and queue them
            outbox.put(INBOUND_CALL, {"call": str(call.id)})
        # a scheduled call gets its message when it fires (ivr/store/scheduled.py)
    return call.id


# -- reading calls (GET /apps/api/v1/calls...) ------------------------------------------------------


@dataclass
class CallBundle:
    """Calls and every row their objects show, read with a fixed number of queries whatever their count."""

    calls: list[m.ContactCenterCall]
    participants: dict[uuid.UUID, list[m.ContactCenterParticipant]]  # by call
    users: dict[uuid.UUID, m.User]
    end_users: dict[uuid.UUID, m.EndUser]
    menus: dict[uuid.UUID, m.CallMenu]           # the calls' menus and all their ancestors
    parents: dict[uuid.UUID, int]                # a parent call's id -> its numericId

    def menu_path(self, menu_id: uuid.UUID) -> list[m.CallMenu]:
        """The menus from the root to ``menu_id``."""
        path: list[m.CallMenu] = []
        seen: set[uuid.UUID] = set()
        menu = self.menus.get(menu_id)
        while menu is not None and menu.id not in seen:
            seen.add(menu.id)
            path.append(menu)
            menu = self.menus.get(menu.parentId) if menu.parentId else None
        return path[::-1]


def call_bundle(project_id: uuid.UUID, calls: list[m.ContactCenterCall]) -> CallBundle:
    ids = [c.id for c in calls]
    participants: dict[uuid.UUID, list[m.ContactCenterParticipant]] = {i: [] for i in ids}
    users: dict[uuid.UUID, m.User] = {}
    end_users: dict[uuid.UUID, m.EndUser] = {}
    menus: dict[uuid.UUID, m.CallMenu] = {}
    parents: dict[uuid.UUID, int] = {}
    if not ids:
        return CallBundle(calls, participants, users, end_users, menus, parents)
    P = m.ContactCenterParticipant
    for row in on_reader(P.select().where(P.call.in_(ids), P.project == project_id).order_by(P.numericId)):
        participants[row.callId].append(row)
    user_ids = {c.agentId for c in calls if c.agentId} | {p.userId for ps in participants.values() for p in ps
                                                            if p.userId}
    if user_ids:
        users = {u.id: u for u in on_reader(m.User.select().where(m.User.id.in_(list(user_ids)),
                                                                  m.User.project == project_id))}
    end_user_ids = {c.endUserId for c in calls if c.endUserId} | {p.endUserId for ps in participants.values()
                                                                    for p in ps if p.endUserId}
    if end_user_ids:
        end_users = {e.id: e for e in on_reader(m.EndUser.select().where(m.EndUser.id.in_(list(end_user_ids)),
                                                                         m.EndUser.project == project_id))}
    wanted = {c.callMenuId for c in calls if c.callMenuId}
    while wanted:  # one query per level of the menu tree, not per call
        found = list(on_reader(m.CallMenu.select().where(m.CallMenu.id.in_(list(wanted)),
                                                         m.CallMenu.project == project_id)))
        menus.update((menu.id, menu) for menu in found)
        wanted = {menu.parentId for menu in found if menu.parentId and menu.parentId not in menus}
    parent_ids = {c.parentCallId for c in calls if c.parentCallId}
    if parent_ids:
        C = m.ContactCenterCall
        parents = dict(on_reader(C.select(C.id, C.numericId).where(C.id.in_(list(parent_ids)),
                                                                   C.project == project_id)).tuples())
    return CallBundle(calls, participants, users, end_users, menus, parents)


def get_call(project_id: uuid.UUID, numeric_id: int) -> CallBundle | None:
    call = _call_by_number(project_id, numeric_id)
    return None if call is None else call_bundle(project_id, [call])


@dataclass
class CallFilter:
    """The filters of a list of calls (integer ids are the API's numericIds)."""

    status: str | None = None
    call_type: str | None = None
    agent_id: int | None = None
    end_user_id: int | None = None
    menu_id: int | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None


_SORT_COLUMNS = {"id": "numericId", "created_at": "createdAt", "ends_at": "endsAt"}


def list_calls(project_id: uuid.UUID, filters: CallFilter, sort_column: str, descending: bool,
               offset: int, limit: int) -> tuple[int, CallBundle]:
    C = m.ContactCenterCall
    query = C.select().where(C.project == project_id)
    if filters.status is not None:
        query = query.where(C.status == filters.status)
    if filters.call_type is not None:
        query = query.where(C.callType == filters.call_type)
    if filters.created_after is not None:
        query = query.where(C.createdAt >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(C.createdAt <= filters.created_before)
    for numeric_id, model, column in ((filters.agent_id, m.User, C.agentId),
                                      (filters.end_user_id, m.EndUser, C.endUser),
                                      (filters.menu_id, m.CallMenu, C.menu)):
        if numeric_id is not None:
            inner = model.select(model.id).where(model.project == project_id, model.numericId == numeric_id)
            query = query.where(column.in_(inner))
    total = on_reader(query).count()
    column = getattr(C, _SORT_COLUMNS[sort_column])
    tie = C.numericId.desc() if descending else C.numericId.asc()
    order = [column.desc(nulls="LAST") if descending else column.asc(nulls="LAST"), tie]
    if column is C.numericId:
        order = order[:1]
    calls = list(on_reader(query.order_by(*order).offset(offset).limit(limit)))
    return total, call_bundle(project_id, calls)


FLAG_COLUMNS = {"verified_customer": "verifiedCustomer", "bad_actor": "badActor", "repeat_customer": "repeatCustomer"}


def customer_flags(call: m.ContactCenterCall) -> dict[str, bool]:
    return {name: bool(getattr(call, column)) for name, column in FLAG_COLUMNS.items()}


def read_flags(project_id: uuid.UUID, numeric_id: int) -> dict[str, bool] | None:
    call = _call_by_number(project_id, numeric_id)
    return None if call is None else customer_flags(call)


def set_flags(project_id: uuid.UUID, numeric_id: int, changes: dict[str, bool]) -> dict[str, bool] | None:
    """Change a call's customer flags (API names), answer them all; None: no such call."""
    Call = m.ContactCenterCall
    with write_transaction():
        call = _call_by_number(project_id, numeric_id)
        if call is None:
            return None
        if changes:
            values = {FLAG_COLUMNS[name]: value for name, value in changes.items()}
            Call.update(**values, updatedAt=m.utcnow()).where(Call.id == call.id).execute()
            for column, value in values.items():
                setattr(call, column, value)
        return customer_flags(call)


def recording_file(project_id: uuid.UUID, numeric_id: int) -> str | None:
    """The name of a call's recording under the recordings directory (None: no call, or no recording)."""
    call = _call_by_number(project_id, numeric_id)
    return call.recordingFile if call is not None and call.recordingFile else None


def mark_voicemail_read(project_id: uuid.UUID, numeric_id: int) -> bool:
    """A received voicemail was listened to: ``voicemail_read``. False when it is not one (any more)."""
    Call = m.ContactCenterCall
    return bool(Call.update(status=CallStatus.VOICEMAIL_READ.value, updatedAt=m.utcnow())
                .where(Call.project == project_id, Call.numericId == numeric_id,
                       Call.status == CallStatus.VOICEMAIL_RECEIVED.value).execute())


def bundle_of(project_id: uuid.UUID, call_id: uuid.UUID) -> CallBundle:
    """The bundle of one call of the project, by its ``_id`` (a call just created)."""
    C = m.ContactCenterCall
    return call_bundle(project_id, list(on_reader(C.select().where(C.id == call_id, C.project == project_id))))
