"""Inbound contact-center calls, as the call services read and open them: a phone call to a root
IVR menu's routing number becomes a call of the calls API (``Voice Inbound (IVR)``), the menu
tree is read once for its walk, and a queue's available agents when the caller reaches it.

Writes of the call's progress go through ivr/store/cc_progress.py like the outbound calls'.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import phonenumbers
from dataclasses import dataclass

from ivr.core.contact_center.menus import effective_state
from ivr.core.contact_center.queue import QueueAgent, QueueSetup
from ivr.core.contact_center.vocabulary import (
    VOIP_PROVIDER_ASTERISK,
    CallStatus,
    CallType,
    Deflection,
    MenuState,
    MenuType,
    OfferType,
    ParticipantStatus,
    ParticipantType,
    RecordingOption,
)
from ivr.core.contact_center.walk import MenuNode, WalkSetup
from ivr.core.phone import InvalidNumber, to_e164
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.callstore import caller_id
from ivr.store.cc_progress import STALE_AFTER, fail_unplaced
from ivr.store.contact_center import COSTLY_TYPES, INBOUND_CALL, agent_address, agent_is_available
from ivr.store.db import write_transaction

log = logging.getLogger(__name__)

Menu, Call, Participant = m.CallMenu, m.ContactCenterCall, m.ContactCenterParticipant
#: Keys 1-9 select the children at positions 0-8 (position + 1); later positions are not offered.
MAX_KEYS = 9


@dataclass(frozen=True)
class InboundOpened:
    call_id: str
    number: int              # numericId, for log lines
    project_id: uuid.UUID
    lang: str
    caller_number: str       # E.164 when the caller ID is a number, else what it showed ("" unknown)
    walk: WalkSetup
    can_call_back: bool = False  # the caller's number is one Hotline may call back (E.164, not premium-rate)


def root_menu(dialed: str, default_region: str) -> m.CallMenu | None:
    """The root IVR menu whose routing number is ``dialed`` (any format), or None."""
    try:
        number = to_e164(dialed, default_region)
    except InvalidNumber:
        return None
    return (Menu.select().where(Menu.routingPhoneNumber == number, Menu.parent.is_null(True),
                                Menu.menuType == MenuType.IVR.value).first())


def _node(menu: m.CallMenu, children: list[m.CallMenu], at: dt.datetime, verified: set[str]) -> MenuNode:
    try:
        state = effective_state(menu.state, menu.openingHours, menu.timeZone, at)
    except ValueError:  # opening hours the API's checks should have refused: as set
        state = MenuState(menu.state)
    shown = [c for c in children if not c.hidden and 0 <= c.position < MAX_KEYS]
    return MenuNode(
        id=str(menu.id), name=menu.name, message=menu.outputMessage or "", state=state,
        children=tuple(str(c.id) for c in shown), keys=tuple(str(c.position + 1) for c in shown),
        policy_id=str(menu.incomingCallPolicyId) if menu.incomingCallPolicyId else None,
        redirection_menu=str(menu.redirectionMenuId) if menu.redirectionMenuId else None,
        # Only a verified number of the project is ever rung (an API key cannot make calls go anywhere).
        redirection_number=menu.redirectionNumber if menu.redirectionNumber in verified else None,
        after_hours=Deflection(menu.afterHoursDeflection), deflection_message=menu.deflectionMessage or "",
        voicemail_seconds=float(menu.voicemailMaxSeconds), callback_seconds=float(menu.callbackDelaySeconds))


def open_inbound(dialed: str, caller: str, default_region: str, node: str, channel_id: str,
                 input_seconds: float) -> InboundOpened | None:
    """The call of a phone call to a root IVR menu (status ``selecting``), its end user (found or made
    from the caller's number) and the project's IVR menu tree; None when no root menu has ``dialed``."""
    root = root_menu(dialed, default_region)
    if root is None:
        return None
    now = m.utcnow()
    menus = list(Menu.select().where(Menu.project == root.projectId, Menu.menuType == MenuType.IVR.value)
                 .order_by(Menu.position, Menu.createdAt, Menu.id))
    children: dict[uuid.UUID, list[m.CallMenu]] = {}
    for menu in menus:
        if menu.parentId is not None:
            children.setdefault(menu.parentId, []).append(menu)
    Number = m.UserIncomingCallNumber
    wanted = [menu.redirectionNumber for menu in menus if menu.redirectionNumber]
    verified = {n for (n,) in Number.select(Number.phoneNumber).where(
        Number.project == root.projectId, Number.isVerified == True, Number.phoneNumber.in_(wanted)  # noqa: E712
    ).tuples()} if wanted else set()
    for menu in menus:
        if menu.redirectionNumber and menu.redirectionNumber not in verified and menu.state == "manual_redirection":
            log.warning("menu %r redirects to %s, which is not a verified number of its project: its callers "
                        "hear a message instead", menu.name, menu.redirectionNumber)
    tree = {str(menu.id): _node(menu, children.get(menu.id, []), now, verified) for menu in menus}
    shown, _raw = caller_id(caller, default_region)
    caller_number = shown or ""
    e164 = caller_number if caller_number.startswith("+") else None
    lang = (root.languages or ["en"])[0]
    with write_transaction():
        end_user = None
        if e164:
            end_user = (m.EndUser.select().where(m.EndUser.project == root.projectId, m.EndUser.phoneNumber == e164)
                        .order_by(m.EndUser.createdAt, m.EndUser.id).first())
            if end_user is None:
                end_user = m.EndUser.create(project=root.projectId, phoneNumber=e164)
        call = Call.create(project=root.projectId, callType=CallType.IVR.value, status=CallStatus.SELECTING.value,
                           lang=lang, menu=root.id, endUser=end_user.id if end_user else None, endUserNumber=e164,
                           supportNumber=root.routingPhoneNumber, voipProvider=VOIP_PROVIDER_ASTERISK,
                           channelPrefix=node, createdAt=now, updatedAt=now)
        Participant.create(project=root.projectId, call=call.id, type=ParticipantType.END_USER.value,
                           status=ParticipantStatus.WAITING.value, endUser=end_user.id if end_user else None,
                           address=caller_number or None, channelId=channel_id)
    return InboundOpened(str(call.id), call.numericId, root.projectId, lang, caller_number,
                         WalkSetup(call_id=str(call.id), root_id=str(root.id), menus=tree,
                                   input_seconds=input_seconds), can_call_back=callable_number(e164))


def callable_number(e164: str | None) -> bool:
    """A caller ID Hotline may call back: a valid number, not premium-rate or shared-cost (a caller ID
    is the caller's to choose: a forged one must not make Hotline call a costly number)."""
    if not e164:
        return False
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) not in COSTLY_TYPES


def schedule_callback(call_id: str, menu_id: str, seconds: float) -> int | None:
    """A call-back for a deflected caller: a scheduled call (``Voice Scheduled (API)``, its parent this
    call) to their number in ``menu_id``'s queue, ``seconds`` from now; the scheduler fires it. Its
    numericId, or None when the call has no number to call back."""
    parent = Call.get_by_id(uuid.UUID(call_id))
    if not callable_number(parent.endUserNumber):
        return None
    menu = Menu.get_or_none(Menu.id == uuid.UUID(menu_id))
    outbound = None
    if menu is not None and menu.outboundPhoneNumberId is not None:
        outbound = m.OutboundPhoneNumber.get_or_none(m.OutboundPhoneNumber.id == menu.outboundPhoneNumberId)
    if outbound is None:
        numbers = list(m.OutboundPhoneNumber.select().where(m.OutboundPhoneNumber.project == parent.projectId)
                       .order_by(m.OutboundPhoneNumber.createdAt))
        outbound = next((n for n in numbers if n.isDefault), numbers[0] if len(numbers) == 1 else None)
    now = m.utcnow()
    with write_transaction():
        call = Call.create(project=parent.projectId, callType=CallType.SCHEDULED.value,
                           status=CallStatus.SCHEDULED.value, lang=parent.lang, parentCallId=parent.id,
                           menu=menu.id if menu else parent.callMenuId, endUser=parent.endUserId,
                           endUserNumber=parent.endUserNumber, outboundNumber=outbound.phoneNumber if outbound else None,
                           scheduledAt=now + dt.timedelta(seconds=seconds), voipProvider=VOIP_PROVIDER_ASTERISK,
                           createdAt=now, updatedAt=now)
        Participant.create(project=parent.projectId, call=call.id, type=ParticipantType.END_USER.value,
                           status=ParticipantStatus.WAITING.value, endUser=parent.endUserId,
                           address=parent.endUserNumber)
    return call.numericId


def queue_setup(call_id: str, menu_id: str, caller_number: str, *, ring_seconds: float, confirm_seconds: float,
                announce_every: float, max_call_seconds: float) -> QueueSetup:
    """The queue ``menu_id`` as the offer needs it: its available agents (an agent's availability, no
    other call, a verified number), by cascade group then the order they were added."""
    menu = Menu.get_by_id(uuid.UUID(menu_id))
    Agent = m.CallMenuAgent
    rows = list(Agent.select(Agent, m.User).join(m.User).where(Agent.callMenu == menu.id)
                .order_by(Agent.groupNumber, Agent.createdAt, Agent.id))
    agents = []
    for row in rows:
        user = row.user
        if not user.isAgent or not agent_is_available(user):
            continue
        address = agent_address(user)
        if address:
            agents.append(QueueAgent(str(user.id), address, max(1, row.groupNumber or 1)))
    call = Call.get_by_id(uuid.UUID(call_id))
    return QueueSetup(
        call_id=call_id, menu_id=menu_id, queue_name=menu.name, caller_number=caller_number, agents=tuple(agents),
        offer_type=OfferType(menu.offerType), group_delay=float(menu.cascadeGroupDelaySeconds),
        ring_seconds=ring_seconds, confirm_seconds=confirm_seconds, max_wait_seconds=float(menu.maxWaitSeconds),
        announce_every=announce_every, no_agent=Deflection(menu.noAgentDeflection),
        deflection_message=menu.deflectionMessage or "", voicemail_seconds=float(menu.voicemailMaxSeconds),
        callback_seconds=float(menu.callbackDelaySeconds),
        # A phone caller was never asked for permission: "ask" does not record them.
        record=menu.recordingOption == RecordingOption.ALWAYS.value, max_call_seconds=max_call_seconds,
        queued_at=0.0 if call.queuedAt is None else call.queuedAt.replace(tzinfo=dt.timezone.utc).timestamp())


def queue_position(call_id: str, menu_id: str) -> int:
    """Where a queued call is in its queue: 1 + the calls of that menu queued before it, still queued."""
    me = Call.get_by_id(uuid.UUID(call_id))
    if me.queuedAt is None:
        return 1
    ahead = Call.select().where(Call.menu == uuid.UUID(menu_id), Call.status == CallStatus.QUEUED.value,
                                Call.queuedAt < me.queuedAt, Call.id != me.id).count()
    return ahead + 1


# -- inbound calls of the API (and scheduled calls, once fired): Hotline calls the end user ----------


@dataclass(frozen=True)
class TakenInbound:
    call_id: str
    number: int
    project_id: uuid.UUID
    menu_id: str
    lang: str
    end_user_address: str
    outbound_number: str | None
    queued_at: float


def take_inbound_calls(node: str, limit: int = 20) -> list[TakenInbound]:
    """Take the inbound calls queued by the API (or fired by the scheduler) from the outbox and claim
    them for ``node``, in one transaction; a call that waited longer than ``STALE_AFTER`` since it was
    queued fails instead of calling its end user long after the request."""
    taken = []
    if not outbox.any_due(INBOUND_CALL):
        return taken  # nothing queued: no write transaction (on SQLite, no write lock)
    now = m.utcnow()
    with write_transaction():
        for message in outbox.take(INBOUND_CALL, limit):
            try:
                call_id = uuid.UUID(str(message.payload.get("call")))
            except (ValueError, AttributeError):
                continue
            claimed = (Call.update(channelPrefix=node, updatedAt=now)
                       .where(Call.id == call_id, Call.status == CallStatus.QUEUED.value,
                              Call.channelPrefix.is_null(True)).execute())
            if not claimed:
                continue  # already claimed, ended or deleted
            call = Call.get_by_id(call_id)
            queued = call.queuedAt or call.createdAt
            waited = (now - queued).total_seconds()
            if waited > STALE_AFTER or call.callMenuId is None or not call.endUserNumber:
                fail_unplaced(call_id, f"The call services took the call {waited:.0f} s after it was queued "
                                        f"(more than {STALE_AFTER:.0f} s: were they running?); the end user was "
                                        "not called." if call.callMenuId and call.endUserNumber else
                               "The call has no menu or no end-user number to call.", now)
                continue
            taken.append(TakenInbound(str(call.id), call.numericId, call.projectId, str(call.callMenuId),
                                      call.lang or "en", call.endUserNumber, call.outboundNumber,
                                      queued.replace(tzinfo=dt.timezone.utc).timestamp()))
    return taken
