"""The state of one escalating call: immutable snapshots the transition function replaces.

``CallState.to_dict()`` is JSON-serializable, so a shell may persist it; ``from_dict`` refuses a
snapshot of another schema version rather than misreading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ivr.core.vocabulary import CallSetup, CallStatus, Contact

_SCHEMA_VERSION = 1


class Phase(StrEnum):
    NEW = "new"  # waiting for CallStarted
    GREETING = "greeting"  # greeting plays to the caller
    HUNTING = "hunting"  # legs of the escalation rules ring
    CONNECTED = "connected"  # caller bridged with one leg
    CLOSING = "closing"  # a final message plays before the engine hangs up the caller (or records a voicemail)
    VOICEMAIL = "voicemail"  # nobody answered: the voicemail prompt plays, then the caller is recorded
    FINISHED = "finished"  # terminal log written; nothing more happens


class LegPhase(StrEnum):
    DIALING = "dialing"  # Dial sent, no news yet
    RINGING = "ringing"
    CONFIRMING = "confirming"  # answered, the "press 1" prompt plays
    BRIDGED = "bridged"
    ENDED = "ended"  # its item has its terminal status


LIVE_LEG_PHASES = frozenset({LegPhase.DIALING, LegPhase.RINGING, LegPhase.CONFIRMING})
UNANSWERED_LEG_PHASES = frozenset({LegPhase.DIALING, LegPhase.RINGING})


@dataclass(frozen=True)
class LegState:
    leg_id: str
    contact: Contact
    rule_order: int
    escalate_after_seconds: float
    phase: LegPhase
    dialed_at: float
    answered_at: float | None = None
    prompt_playback_id: str | None = None
    item_status: CallStatus = CallStatus.RINGING

    @property
    def is_live(self) -> bool:
        return self.phase in LIVE_LEG_PHASES

    def to_dict(self) -> dict[str, Any]:
        return {
            "leg_id": self.leg_id,
            "contact": self.contact.to_dict(),
            "rule_order": self.rule_order,
            "escalate_after_seconds": self.escalate_after_seconds,
            "phase": self.phase.value,
            "dialed_at": self.dialed_at,
            "answered_at": self.answered_at,
            "prompt_playback_id": self.prompt_playback_id,
            "item_status": self.item_status.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LegState:
        return cls(
            leg_id=data["leg_id"],
            contact=Contact.from_dict(data["contact"]),
            rule_order=data["rule_order"],
            escalate_after_seconds=data["escalate_after_seconds"],
            phase=LegPhase(data["phase"]),
            dialed_at=data["dialed_at"],
            answered_at=data["answered_at"],
            prompt_playback_id=data["prompt_playback_id"],
            item_status=CallStatus(data["item_status"]),
        )


@dataclass(frozen=True)
class CallState:
    """Immutable snapshot of one call; ``to_dict()`` is JSON-serializable for persistence."""

    setup: CallSetup
    phase: Phase = Phase.NEW
    started: bool = False
    # Index into escalation_plan(setup) of the rule being rung, and the round (0-based).
    rule_position: int | None = None
    repeat_count: int = 0
    # All rounds are used up but a leg is still deciding whether to press 1.
    exhausted: bool = False
    legs: tuple[LegState, ...] = ()
    timers: tuple[tuple[str, float], ...] = ()  # pending (timer_id, at)
    rule_timer_id: str | None = None
    rule_timer_count: int = 0
    playback_count: int = 0
    caller_playback_id: str | None = None  # greeting or closing message
    closing_status: CallStatus | None = None
    closing_message: str | None = None
    # The log's statusMessage if the caller hangs up during the closing message, when it differs from
    # closing_message (a refused call's says whether its message was heard in full); None: the same.
    closing_cut_message: str | None = None
    # Nobody answered and the policy takes voicemail: after the closing (no-answer) message, the prompt.
    voicemail_next: bool = False
    recording: str | None = None  # the voicemail's recording, once it started
    caller_gone: bool = False  # the caller hung up during the recording (it still ends: Asterisk says so)
    ringback_on: bool = False
    bridged_leg_id: str | None = None
    connected_at: float | None = None
    log_status: CallStatus = CallStatus.INITIATED
    ended_at: float | None = None

    @classmethod
    def initial(cls, setup: CallSetup) -> CallState:
        return cls(setup=setup)

    def leg(self, leg_id: str) -> LegState | None:
        for leg in self.legs:
            if leg.leg_id == leg_id:
                return leg
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _SCHEMA_VERSION,
            "setup": self.setup.to_dict(),
            "phase": self.phase.value,
            "started": self.started,
            "rule_position": self.rule_position,
            "repeat_count": self.repeat_count,
            "exhausted": self.exhausted,
            "legs": [leg.to_dict() for leg in self.legs],
            "timers": [[timer_id, at] for timer_id, at in self.timers],
            "rule_timer_id": self.rule_timer_id,
            "rule_timer_count": self.rule_timer_count,
            "playback_count": self.playback_count,
            "caller_playback_id": self.caller_playback_id,
            "closing_status": None if self.closing_status is None else self.closing_status.value,
            "closing_message": self.closing_message,
            "closing_cut_message": self.closing_cut_message,
            "voicemail_next": self.voicemail_next,
            "recording": self.recording,
            "caller_gone": self.caller_gone,
            "ringback_on": self.ringback_on,
            "bridged_leg_id": self.bridged_leg_id,
            "connected_at": self.connected_at,
            "log_status": self.log_status.value,
            "ended_at": self.ended_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        if data.get("version") != _SCHEMA_VERSION:
            raise ValueError(f"unsupported call state version {data.get('version')!r}")
        closing = data["closing_status"]
        return cls(
            setup=CallSetup.from_dict(data["setup"]),
            phase=Phase(data["phase"]),
            started=data["started"],
            rule_position=data["rule_position"],
            repeat_count=data["repeat_count"],
            exhausted=data["exhausted"],
            legs=tuple(LegState.from_dict(leg) for leg in data["legs"]),
            timers=tuple((timer_id, at) for timer_id, at in data["timers"]),
            rule_timer_id=data["rule_timer_id"],
            rule_timer_count=data["rule_timer_count"],
            playback_count=data["playback_count"],
            caller_playback_id=data["caller_playback_id"],
            closing_status=None if closing is None else CallStatus(closing),
            closing_message=data["closing_message"],
            closing_cut_message=data.get("closing_cut_message"),  # absent from snapshots of earlier versions
            voicemail_next=data.get("voicemail_next", False),  # absent from snapshots of earlier versions
            recording=data.get("recording"),
            caller_gone=data.get("caller_gone", False),
            ringback_on=data["ringback_on"],
            bridged_leg_id=data["bridged_leg_id"],
            connected_at=data["connected_at"],
            log_status=CallStatus(data["log_status"]),
            ended_at=data["ended_at"],
        )
