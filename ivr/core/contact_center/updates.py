"""What the contact center's flows record: typed changes of a call and of its participants.

Every flow (outbound, the menu walk, the queue offer, voicemail) speaks these; the store
(ivr/store/cc_progress.py) maps each field to its column. Times are the flows' ``now`` (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ivr.core.contact_center.vocabulary import (
    CallStatus,
    Deflection,
    DisconnectedBy,
    FailReason,
    OfferType,
    ParticipantStatus,
    ParticipantType,
    VoicemailReason,
)


@dataclass(frozen=True)
class _Update:
    def changes(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "party" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class UpdateCall(_Update):
    status: CallStatus | None = None
    outbound_number: str | None = None
    fail_reason: FailReason | None = None
    fail_details: str | None = None
    disconnected_by: DisconnectedBy | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    menu_id: str | None = None            # the menu the caller is in (selected_menu; a leaf once chosen)
    agent_id: str | None = None           # the agent who accepted
    queued_at: float | None = None
    assigned_at: float | None = None
    offer_type: OfferType | None = None
    offer_group: int | None = None        # an offer was cast to this group (appended to offer_events)
    offer_at: float | None = None         # ... at this time
    deflection: Deflection | None = None
    voicemail_reason: VoicemailReason | None = None
    incoming_call_log_id: str | None = None  # handed to an Incoming Call Policy: its log


@dataclass(frozen=True)
class UpdateParticipant(_Update):
    party: ParticipantType = ParticipantType.AGENT
    status: ParticipantStatus | None = None
    channel_id: str | None = None
    fail_reason: FailReason | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    talk_seconds: float | None = None
    user_id: str | None = None    # an agent who joins a queued call (the row is made then)
    address: str | None = None
