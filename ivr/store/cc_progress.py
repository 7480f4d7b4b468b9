"""What happens to a contact-center call, written by the call services (ivr/shells/contact_center.py):
taking a queued outbound call, its status and its participants' as the flow reports them, its
recording, and closing what a stopped controller left open.

A call taken from the outbox is claimed in the same transaction (``channelPrefix`` = the Asterisk node
that places it): a call is placed once, and a controller that restarts closes the calls of its node
that no longer run (their agents would otherwise stay busy).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from ivr.core.contact_center.updates import UpdateCall, UpdateParticipant
from ivr.core.contact_center.vocabulary import (
    LIVE_STATUSES,
    CallStatus,
    DisconnectedBy,
    FailReason,
    ParticipantStatus,
    ParticipantType,
)
from ivr.core.phone import display
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.callstore import timestamp_of, utc_from_timestamp
from ivr.store.contact_center import OUTBOUND_CALL
from ivr.store.db import write_transaction

Call, Participant = m.ContactCenterCall, m.ContactCenterParticipant


@dataclass(frozen=True)
class TakenCall:
    call_id: str
    number: int                   # numericId, for log lines
    project_id: uuid.UUID
    agent_address: str | None
    end_user_address: str | None
    outbound_number: str | None
    choices: tuple[str, ...]
    spoken_choices: tuple[str, ...]
    created_at: float
    record: bool


#: A call not taken within this many seconds of its creation is failed, not placed: an agent must not
#: be rung for a request made long ago (the call services were not running).
STALE_AFTER = 120.0


def take_outbound_calls(node: str, limit: int = 20) -> list[TakenCall]:
    """Take the queued outbound calls and claim them for ``node``, in one transaction; fail those
    that waited longer than :data:`STALE_AFTER`."""
    taken = []
    if not outbox.any_due(OUTBOUND_CALL):
        return taken  # nothing queued: no write transaction (on SQLite, no write lock)
    now = m.utcnow()
    with write_transaction():
        for message in outbox.take(OUTBOUND_CALL, limit):
            try:
                call_id = uuid.UUID(str(message.payload.get("call")))
            except (ValueError, AttributeError):
                continue
            claimed = (Call.update(channelPrefix=node, updatedAt=m.utcnow())
                       .where(Call.id == call_id, Call.status == CallStatus.ASSIGNED.value,
                              Call.channelPrefix.is_null(True)).execute())
            if not claimed:
                continue  # already claimed, cancelled or deleted
            call = Call.get_by_id(call_id)
            waited = (now - call.createdAt).total_seconds()
            if waited > STALE_AFTER:
                fail_unplaced(call_id, f"The call services took the call {waited:.0f} s after it was created "
                                        f"(more than {STALE_AFTER:.0f} s: were they running?); it was not placed.",
                               now)
                continue
            parties = {p.type: p for p in Participant.select().where(Participant.call == call_id)}
            agent, end_user = parties.get(ParticipantType.AGENT.value), parties.get(ParticipantType.END_USER.value)
            choices = tuple(call.outboundChoices or ())
            taken.append(TakenCall(
                str(call.id), call.numericId, call.projectId, agent.address if agent else None,
                end_user.address if end_user else None, call.outboundNumber, choices,
                tuple(display(n, national=True) for n in choices), timestamp_of(call.createdAt), call.recordRequested))
    return taken


def fail_unplaced(call_id: uuid.UUID, detail: str, when: dt.datetime) -> None:
    Call.update(status=CallStatus.FAILED.value, failReason=FailReason.SYSTEM_ERROR.value, failDetails=detail,
                disconnectedBy=DisconnectedBy.SYSTEM.value, endsAt=when, updatedAt=m.utcnow()
                ).where(Call.id == call_id).execute()
    (Participant.update(status=ParticipantStatus.FAILED.value, failReason=FailReason.SYSTEM_ERROR.value, endedAt=when)
     .where(Participant.call == call_id).execute())


_CALL_COLUMNS = {"status": "status", "outbound_number": "outboundNumber", "fail_reason": "failReason",
                 "fail_details": "failDetails", "disconnected_by": "disconnectedBy", "connected_at": "connectedAt",
                 "ended_at": "endsAt", "wait_seconds": "waitDuration", "talk_seconds": "callDuration",
                 "menu_id": "menu", "agent_id": "agentId", "queued_at": "queuedAt", "assigned_at": "assignedAt",
                 "offer_type": "offerType", "deflection": "deflection", "voicemail_reason": "voicemailReason",
                 "incoming_call_log_id": "incomingCallLogId"}
_PARTICIPANT_COLUMNS = {"status": "status", "channel_id": "channelId", "fail_reason": "failReason",
                        "connected_at": "connectedAt", "ended_at": "endedAt", "talk_seconds": "callDuration",
                        "user_id": "userId", "address": "address"}
#: Resolved at import: a renamed field fails every test at once, not a call's write at run time.
assert all(c in Call._meta.fields for c in _CALL_COLUMNS.values())
assert all(c in Participant._meta.fields for c in _PARTICIPANT_COLUMNS.values())


def _values(columns: dict[str, str], changes: dict) -> dict:
    out = {}
    for name, value in changes.items():
        column = columns[name]
        if name.endswith("_at"):
            value = utc_from_timestamp(value)
        elif name.endswith("_seconds"):
            value = int(round(value))
        elif hasattr(value, "value"):
            value = value.value
        out[column] = value
    out["updatedAt"] = m.utcnow()
    return out


def update_call(call_id: str, update: UpdateCall) -> None:
    """Write what the flow reports: an offer cast is appended to ``offer_events``; a callback (a call
    with a parent) that finishes recovers its parent, in the same transaction (:func:`_recover_parent`)."""
    changes = update.changes()
    group, at = changes.pop("offer_group", None), changes.pop("offer_at", None)
    key = uuid.UUID(call_id)
    values = _values(_CALL_COLUMNS, changes)
    if group is None and values.get("status") != CallStatus.FINISHED.value:
        Call.update(**values).where(Call.id == key).execute()
        return
    with write_transaction():
        if group is not None:  # read and written under the write lock
            query = Call.select(Call.offerEvents).where(Call.id == key)
            row = (query.for_update() if m.database.obj.for_update else query).first()
            if row is None:
                return
            cast = utc_from_timestamp(at).isoformat(timespec="milliseconds") + "Z"   # the API's instants
            values["offerEvents"] = [*(row.offerEvents or []), {"casting_time": cast, "group": f"Group {group}"}]
        Call.update(**values).where(Call.id == key).execute()
        if values.get("status") == CallStatus.FINISHED.value:
            _recover_parent(key)


def _recover_parent(call_id: uuid.UUID) -> None:
    """The seed: "Recovered: State that occurs when a failed call is called back. This new call is a
    child to the original call. Recovered notes that the call back is finished without error." So a
    call that finished makes its parent, if that one ``failed``, ``recovered`` (guarded: a parent in
    any other status is left as it is)."""
    child = Call.select(Call.parentCallId, Call.project).where(Call.id == call_id).first()
    if child is None or child.parentCallId is None:
        return
    (Call.update(status=CallStatus.RECOVERED.value, updatedAt=m.utcnow())
     .where(Call.id == child.parentCallId, Call.project == child.projectId,
            Call.status == CallStatus.FAILED.value).execute())


def update_participant(call_id: str, update: UpdateParticipant) -> None:
    """A participant's change; an agent who joins a queued call gets their row then (``user_id``)."""
    key = uuid.UUID(call_id)
    values = _values(_PARTICIPANT_COLUMNS, update.changes())
    updated = (Participant.update(**values)
               .where(Participant.call == key, Participant.type == update.party.value).execute())
    if not updated and update.user_id is not None:
        call = Call.get_or_none(Call.id == key)
        if call is not None:
            Participant.create(project=call.projectId, call=key, type=update.party.value, **values)


def set_recording(call_id: str, file_name: str) -> None:
    Call.update(recordingFile=file_name, updatedAt=m.utcnow()).where(Call.id == uuid.UUID(call_id)).execute()


VOICEMAIL_EVENT = "contact-center.voicemail"


def save_voicemail(call_id: str, file_name: str, alert: bool) -> None:
    """A voicemail's file, and (``alert``: a webhook is configured) its alert, in one transaction: a
    voicemail is never announced before it is kept, nor kept without its alert."""
    key = uuid.UUID(call_id)
    with write_transaction():
        Call.update(recordingFile=file_name, updatedAt=m.utcnow()).where(Call.id == key).execute()
        call = Call.get_or_none(Call.id == key)
        if not alert or call is None:
            return
        menu = m.CallMenu.get_or_none(m.CallMenu.id == call.callMenuId) if call.callMenuId else None
        outbox.put(outbox.WEBHOOK, {
            "event": VOICEMAIL_EVENT, "callId": call.numericId, "projectId": str(call.projectId),
            "endUserNumber": call.endUserNumber, "menu": menu.name if menu else None,
            "voicemailReason": call.voicemailReason,
            "recordingUrl": f"/apps/api/v1/calls/{call.numericId}/recording",
            "receivedAt": m.utcnow().isoformat(timespec="milliseconds") + "Z"})


def open_calls(node: str) -> list[str]:
    """The calls ``node`` claimed that have not ended."""
    return [str(i) for (i,) in Call.select(Call.id).where(
        Call.channelPrefix == node, Call.status.in_([s.value for s in LIVE_STATUSES])).tuples()]


def close_lost(call_id: str, detail: str, ended_at: float) -> None:
    """A call whose controller stopped: failed (``lost``) if it was not connected, else finished,
    by nobody known; its open participants end with it."""
    when = utc_from_timestamp(ended_at)
    key = uuid.UUID(call_id)
    with write_transaction():
        call = Call.get_or_none(Call.id == key)
        if call is None or call.status not in {s.value for s in LIVE_STATUSES}:
            return
        if call.status == CallStatus.CONNECTED.value:
            talk = int(max(0.0, (when - call.connectedAt).total_seconds())) if call.connectedAt else 0
            Call.update(status=CallStatus.FINISHED.value, disconnectedBy=DisconnectedBy.UNKNOWN.value, endsAt=when,
                        callDuration=talk, failDetails=detail, updatedAt=m.utcnow()).where(Call.id == key).execute()
            _recover_parent(key)  # it was connected: the callback reached the end user
        else:
            Call.update(status=CallStatus.FAILED.value, failReason=FailReason.LOST.value, failDetails=detail,
                        endsAt=when, updatedAt=m.utcnow()).where(Call.id == key).execute()
        for p in Participant.select().where(Participant.call == key,
                                            Participant.status.not_in([ParticipantStatus.FINISHED.value,
                                                                       ParticipantStatus.FAILED.value])):
            if p.status == ParticipantStatus.CONNECTED.value:
                talk = int(max(0.0, (when - p.connectedAt).total_seconds())) if p.connectedAt else None
                p.status, p.callDuration = ParticipantStatus.FINISHED.value, talk
            else:
                p.status, p.failReason = ParticipantStatus.FAILED.value, FailReason.LOST.value
            p.endedAt = when
            p.save()


