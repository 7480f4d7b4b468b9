"""Call Log rows of notification calls: validating a request against the project's data, creating the
row (status null while the call is placed) and recording its one outcome."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ivr.core.notification import MAX_MESSAGE, Notification, NotifyInputError
from ivr.core.phone import InvalidNumber, to_e164, validate_sip_uri
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.db import on_reader, write_transaction

PHONE_COLUMN = 32              # CallLog.toNumber / fromNumber keep 32 characters
LINK_FIELDS = ("incidentId", "alertId", "monitorId", "scheduledMaintenanceId", "statusPageId",
               "statusPageAnnouncementId", "onCallDutyPolicyId", "onCallDutyPolicyEscalationRuleId",
               "onCallDutyPolicyScheduleId", "teamId")
REQUEST_FIELDS = ("toNumber", "userId", "message", "fromNumber", *LINK_FIELDS)

def _uuid(body: dict, name: str) -> uuid.UUID | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise NotifyInputError(f"{name}: must be an ID (a UUID string)")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotifyInputError(f"{name}: {raw!r} is not a valid ID (a UUID)") from None


def _address(text: str, region: str, name: str) -> str:
    if text.strip().lower().startswith(("sip:", "sips:")):
        try:
            address = validate_sip_uri(text)
        except InvalidNumber as exc:
            raise NotifyInputError(f"{name}: {exc}") from None
    else:
        try:
            address = to_e164(text, region)
        except InvalidNumber as exc:
            raise NotifyInputError(f"{name}: {exc}") from None
    if len(address) > PHONE_COLUMN:
        raise NotifyInputError(f"{name}: {address!r} is longer than the {PHONE_COLUMN} characters a Call Log keeps")
    return address


def plan_notification(project_id, body: dict, default_region: str, default_from: str = "") -> Notification:
    """Validate a ``POST /api/call-log/send`` body (reads only); the row is created by
    :func:`create_call_log`. Raises :class:`NotifyInputError`."""
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise NotifyInputError(f"unknown field {unknown[0]!r}. Fields: {', '.join(REQUEST_FIELDS)}")
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise NotifyInputError("message: the text to speak is required (a non-empty string)")
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE:
        raise NotifyInputError(f"message: at most {MAX_MESSAGE} characters")
    to_number, user_id = body.get("toNumber"), _uuid(body, "userId")
    if (to_number is None) == (user_id is None):
        raise NotifyInputError("give either toNumber (an E.164 number or a sip: URI) or userId (a user whose "
                               "first verified number is called), not both")
    if to_number is not None:
        if not isinstance(to_number, str):
            raise NotifyInputError("toNumber: must be a string (an E.164 number or a sip: URI)")
        address = _address(to_number, default_region, "toNumber")
        if not _is_verified_number(project_id, address):
            # Toll fraud stops here: a key can only ring the numbers its project verified.
            raise NotifyInputError(f"toNumber: {address} is not a verified number of this project; only verified "
                                   "numbers are ever called (add it to a user as a user-incoming-call-number and "
                                   "verify it, or send userId)")
    else:
        user = on_reader(m.User.select(m.User.id).where(m.User.id == user_id, m.User.project == project_id)).first()
        if user is None:
            raise NotifyInputError(f"userId: no user {user_id} in this project")
        Number = m.UserIncomingCallNumber
        number = on_reader(Number.select().where(Number.user == user_id, Number.project == project_id,
                                                 Number.isVerified == True)  # noqa: E712
                           .order_by(Number.createdAt, Number.id)).first()
        if number is None:
            raise NotifyInputError(f"userId: user {user_id} has no verified number to call")
        address = number.phoneNumber or number.sipUri
        if len(address) > PHONE_COLUMN:
            raise NotifyInputError(f"userId: the user's number {address!r} is longer than the {PHONE_COLUMN} "
                                   "characters a Call Log keeps")
    from_number = body.get("fromNumber")
    if from_number is not None:
        if not isinstance(from_number, str):
            raise NotifyInputError("fromNumber: must be an E.164 number")
        try:
            from_number = to_e164(from_number, default_region)
        except InvalidNumber as exc:
            raise NotifyInputError(f"fromNumber: {exc}") from None
        if from_number != default_from and not _is_own_number(project_id, from_number):
            raise NotifyInputError(f"fromNumber: {from_number} is not one of this project's numbers (the routing "
                                   "number of one of its Incoming Call Policies, or notify.from_number)")
    elif default_from:
        from_number = default_from
    links = {name: str(value) for name in LINK_FIELDS if (value := _uuid(body, name)) is not None}
    return Notification(uuid.uuid4(), project_id, address, from_number or None, message, "notification", links,
                        user_id)


def _is_verified_number(project_id, address: str) -> bool:
    Number = m.UserIncomingCallNumber
    column = Number.sipUri if address.lower().startswith(("sip:", "sips:")) else Number.phoneNumber
    return on_reader(Number.select(Number.id).where(Number.project == project_id, column == address,
                                                    Number.isVerified == True)).exists()  # noqa: E712


def _is_own_number(project_id, e164: str) -> bool:
    Policy = m.IncomingCallPolicy
    return on_reader(Policy.select(Policy.id).where(Policy.project == project_id,
                                                    Policy.routingPhoneNumber == e164)).exists()


class NotifyLimitReached(Exception):
    """A project's cap on notification calls is reached (the API answers 429)."""


#: A notification call with no outcome after this long is not running any more (the orphan sweep
#: closes it): only younger ones count as in progress.
CALL_LIFETIME = dt.timedelta(minutes=20)
NOTIFICATION_CALL = "notification-call"   # the outbox kind of a call to place


def queue_notification(note: Notification, max_in_progress: int, max_per_hour: int) -> Notification:
    """The call's Call Log row (status null) and its outbox message, in one write transaction, within
    the project's caps: ``max_in_progress`` calls being placed, ``max_per_hour`` calls per hour
    (0: no cap). Any process running the call services takes the message and places the call."""
    now = m.utcnow()
    with write_transaction():
        # Serialize the check and the insert per project (PostgreSQL: the project row's lock; SQLite's
        # writers are serialized by its one write lock, taken up front).
        if m.database.obj.for_update:
            list(m.Project.select(m.Project.id).where(m.Project.id == note.project_id).for_update())
        Log = m.CallLog
        mine = Log.select().where(Log.project == note.project_id)
        if max_in_progress and mine.where(Log.status.is_null(True), Log.createdAt > now - CALL_LIFETIME).count() \
                >= max_in_progress:
            raise NotifyLimitReached(f"This project already has {max_in_progress} notification calls being placed "
                                     "(notify.max_calls_in_progress): try again when one has ended.")
        if max_per_hour and mine.where(Log.createdAt > now - dt.timedelta(hours=1)).count() >= max_per_hour:
            raise NotifyLimitReached(f"This project placed {max_per_hour} notification calls in the last hour "
                                     "(notify.max_calls_per_hour): try again later.")
        create_call_log(note)
        outbox.put(NOTIFICATION_CALL, note.to_payload())
    return note


def create_call_log(note: Notification) -> Notification:
    """The Call Log row of a notification, status null while the call is placed."""
    m.CallLog.create(id=note.call_log_id, project=note.project_id, toNumber=note.to, fromNumber=note.from_number,
                     callData=note.call_data(), status=None, statusMessage="The call is being placed.",
                     callCostInUSDCents=0, user=note.user_id,
                     **{name: uuid.UUID(value) for name, value in note.links.items()})
    return note


def finish_call_log(call_log_id, status: str, message: str, cost: int, data: dict[str, Any]) -> None:
    row = m.CallLog.get_or_none(m.CallLog.id == call_log_id)
    if row is None:
        return
    call_data = dict(row.callData or {})
    call_data.update(data)
    # A row gets one outcome: the first to record it (the call, or the sweep of orphaned rows) wins.
    m.CallLog.update(status=status, statusMessage=message, callCostInUSDCents=cost, callData=call_data,
                     updatedAt=m.utcnow()).where(m.CallLog.id == call_log_id, m.CallLog.status.is_null(True)).execute()


def open_call_logs(created_before: dt.datetime) -> list[uuid.UUID]:
    """Rows still waiting for an outcome, created before ``created_before`` (naive UTC)."""
    Log = m.CallLog
    return [row.id for row in Log.select(Log.id).where(Log.status.is_null(True), Log.createdAt < created_before)]
