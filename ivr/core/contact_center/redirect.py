"""Manual redirection to a number, as a pure flow: the caller hears ringback while the menu's
redirection number rings; when it answers the two are bridged (call forwarding), else the caller
hears that no one is available and the call ends.

The call is ``deflected`` (``deflection`` ``redirection``) from the start: the contact center
handed it on. ``connected_at`` and ``call_duration`` say whether and how long the two talked;
``fail_details`` why they did not. The number is checked by the shell's store before this flow
starts: only a verified number of the project is ever rung.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.contact_center.outbound import BridgeParties, DialParty
from ivr.core.contact_center.updates import UpdateCall
from ivr.core.contact_center.vocabulary import CallStatus, Deflection, DisconnectedBy, ParticipantType
from ivr.core.vocabulary import (
    CALLER,
    LEG_ID_MARK,
    CancelTimer,
    HangupCaller,
    HangupLeg,
    IllegalEvent,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackFinished,
    StartRingback,
    StartTimer,
    StopRingback,
    TimerFired,
)

RING = "redirect-ring"
UNAVAILABLE = "No one is available at this number. Please try again later. Goodbye."


@dataclass(frozen=True)
class RedirectSetup:
    call_id: str
    number: str                 # E.164, verified
    caller_id: str | None       # the caller's number, shown to the target (None: the trunk's own)
    ring_seconds: float = 30.0


@dataclass(frozen=True)
class RedirectStarted:
    pass


class RedirectFlow:
    def __init__(self, setup: RedirectSetup):
        self.setup = setup
        self.leg = f"{setup.call_id}{LEG_ID_MARK}redirect"
        self.phase = "new"   # new, ringing, connected, closing, done
        self.connected_at: float | None = None
        self.bye = f"{setup.call_id}-redirect-bye"

    @property
    def is_finished(self) -> bool:
        return self.phase == "done"

    def handle(self, event, now: float) -> list:
        s = self.setup
        if self.phase == "done":
            return []
        if isinstance(event, RedirectStarted):
            if self.phase != "new":
                raise IllegalEvent("redirect started twice")
            self.phase = "ringing"
            return [UpdateCall(status=CallStatus.DEFLECTED, deflection=Deflection.REDIRECTION), StartRingback(),
                    DialParty(ParticipantType.AGENT, self.leg, s.number, s.caller_id, s.ring_seconds),
                    StartTimer(RING, now + s.ring_seconds)]
        if isinstance(event, LegRinging):
            return []
        if isinstance(event, LegAnswered) and event.leg_id == self.leg and self.phase == "ringing":
            self.phase = "connected"
            self.connected_at = now
            return [CancelTimer(RING), StopRingback(), BridgeParties(self.leg, CALLER, False),
                    UpdateCall(connected_at=now)]
        if isinstance(event, LegEnded) and event.leg_id == self.leg:
            if self.phase == "connected":
                return [HangupCaller()] + self._end(now, DisconnectedBy.AGENT)
            if self.phase == "ringing":
                return self._unavailable(now, f"The redirection number {s.number} did not take the call: "
                                              f"{event.detail or event.cause}", hang_up=False)
            return []
        if isinstance(event, TimerFired) and event.timer_id == RING and self.phase == "ringing":
            return self._unavailable(now, f"The redirection number {s.number} did not answer within "
                                          f"{s.ring_seconds:g} s", hang_up=True)
        if isinstance(event, PlaybackFinished) and event.playback_id == self.bye and self.phase == "closing":
            self.phase = "done"
            return [HangupCaller()]
        if isinstance(event, (PlaybackFinished, LegAnswered, LegEnded, TimerFired)):
            return []
        raise IllegalEvent(f"the redirection does not expect {event!r}")

    def hung_up(self, now: float) -> list:
        if self.phase in ("ringing", "connected"):
            return [CancelTimer(RING), HangupLeg(self.leg)] + self._end(now, DisconnectedBy.END_USER)
        self.phase = "done"
        return []

    def _unavailable(self, now: float, detail: str, hang_up: bool) -> list:
        self.phase = "closing"
        out: list = [CancelTimer(RING), StopRingback()]
        if hang_up:
            out.append(HangupLeg(self.leg))
        return out + [UpdateCall(fail_details=detail, disconnected_by=DisconnectedBy.SYSTEM, ended_at=now),
                      Play(CALLER, self.bye, UNAVAILABLE)]

    def _end(self, now: float, by: DisconnectedBy) -> list:
        self.phase = "done"
        talk = now - self.connected_at if self.connected_at is not None else None
        return [UpdateCall(disconnected_by=by, ended_at=now, talk_seconds=talk)]
