"""Call Log rows of notification calls: validating a request against the project's data, creating the
row (status null while the call is placed) and recording its one outcome."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ivr.core.notification import MAX_MESSAGE, Notification, NotifyInputError
from ivr.core.phone import InvalidNumber, to_e164, validate_sip_uri
from ivr.store import models as m
from ivr.store.db import on_reader

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
    elif default_from:
        from_number = default_from
    links = {name: str(value) for name in LINK_FIELDS if (value := _uuid(body, name)) is not None}
    return Notification(uuid.uuid4(), project_id, address, from_number or None, message, "notification", links,
                        user_id)


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
