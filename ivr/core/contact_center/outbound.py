"""An outbound call of the calls API ("Voice Outbound (API)"), as a pure flow: events in, commands out.

The agent's phone rings first; when the agent answers (and, for a call created with 202, has chosen
the outbound number on the keypad: "press 1 for ..."), the end user is dialed from the outbound
number while the agent hears ringback; when the end user answers the two are bridged (and recorded
if the call says so). Statuses: ``assigned`` (created) -> ``connecting`` (the end user is being
dialed) -> ``connected`` -> ``finished``; or ``failed`` with a :class:`FailReason`. Every
participant goes ``waiting -> connecting -> connected -> finished``, or ends ``failed``.

No I/O: the ARI shell (ivr/shells/contact_center.py) turns Asterisk's events into these events and
carries out the commands; the store writes the updates. Times are the ``now`` given to
:meth:`OutboundCall.handle` (seconds, the shell's clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.core.contact_center.updates import UpdateCall, UpdateParticipant
from ivr.core.contact_center.vocabulary import (
    CallStatus,
    DisconnectedBy,
    FailReason,
    ParticipantStatus,
    ParticipantType,
)
from ivr.core.vocabulary import (
    LEG_ID_MARK,
    CancelTimer,
    DigitPressed,
    HangupLeg,
    IllegalEvent,
    LegAnswered,
    LegEnded,
    LegRinging,
    Play,
    PlaybackFinished,
    StartTimer,
    StopPlayback,
    TimerFired,
)

AGENT, END_USER = ParticipantType.AGENT, ParticipantType.END_USER
#: LegEnded causes this flow reads (the ARI shell's classification of a hang-up).
CAUSES = frozenset({"busy", "no_answer", "rejected", "failed", "hangup"})
CHOICE_ATTEMPTS = 2  # the keypad menu is said this many times before the call fails


def leg_id(call_id: str, party: ParticipantType) -> str:
    """The channel id of a participant's leg (chosen by Hotline; marked as a leg)."""
    return f"{call_id}{LEG_ID_MARK}{'agent' if party is AGENT else 'enduser'}"


def choice_prompt(choices: tuple[str, ...], spoken: tuple[str, ...]) -> str:
    parts = [f"Press {i} to call from {spoken[i - 1]}." for i in range(1, len(choices) + 1)]
    return "Choose the number to call from. " + " ".join(parts)


CONNECTING_TEXT = "Connecting your call."
FAILED_TEXT = {
    FailReason.END_USER_BUSY: "The line is busy. The call has ended.",
    FailReason.END_USER_NO_ANSWER: "There was no answer. The call has ended.",
    FailReason.END_USER_REJECTED: "The call was declined. The call has ended.",
    FailReason.END_USER_UNREACHABLE: "The number could not be reached. The call has ended.",
    FailReason.AGENT_NO_CHOICE: "No number was chosen. The call has ended.",
}


# -- what the flow is told, and what it says ------------------------------------------------


@dataclass(frozen=True)
class OutboundSetup:
    call_id: str                  # the ContactCenterCall's _id (leg ids are made from it)
    agent_address: str            # the agent's verified number or SIP URI
    end_user_address: str         # E.164
    outbound_number: str | None   # E.164, None until chosen
    choices: tuple[str, ...] = ()         # E.164 numbers to choose from (outbound_number None)
    spoken_choices: tuple[str, ...] = ()  # how the prompt says them
    created_at: float = 0.0       # when the call was created (wait_duration counts from here)
    agent_ring_seconds: float = 30.0
    end_user_ring_seconds: float = 30.0
    choice_seconds: float = 10.0
    max_call_seconds: float = 7200.0
    record: bool = False


@dataclass(frozen=True)
class Started:
    """The shell is ready: ring the agent."""


@dataclass(frozen=True)
class Lost:
    """The call's channels vanished while the shell was not connected to Asterisk."""

    detail: str = ""


@dataclass(frozen=True)
class DialParty:
    party: ParticipantType
    leg_id: str
    address: str
    caller_id: str | None
    timeout: float


@dataclass(frozen=True)
class Ringback:
    """Ring tone to a leg (the agent, while the end user's phone rings), or stop it."""

    leg_id: str
    on: bool


@dataclass(frozen=True)
class BridgeParties:
    agent_leg: str
    end_user_leg: str
    record: bool


# -- the flow ----------------------------------------------------------------------------------

AGENT_RING, END_USER_RING, CHOICE, MAX_CALL = "agent-ring", "end-user-ring", "choice", "max-call"

_AGENT_FAILS = {"busy": FailReason.AGENT_BUSY, "no_answer": FailReason.AGENT_NO_ANSWER,
                "rejected": FailReason.AGENT_REJECTED, "failed": FailReason.AGENT_UNREACHABLE,
                "hangup": FailReason.AGENT_NO_ANSWER}
_END_USER_FAILS = {"busy": FailReason.END_USER_BUSY, "no_answer": FailReason.END_USER_NO_ANSWER,
                   "rejected": FailReason.END_USER_REJECTED, "failed": FailReason.END_USER_UNREACHABLE,
                   "hangup": FailReason.END_USER_NO_ANSWER}
#: Whose side ended a call that failed so (the network's failures and Hotline's timeouts are not a party's).
_FAILED_BY = {FailReason.AGENT_BUSY: DisconnectedBy.AGENT, FailReason.AGENT_REJECTED: DisconnectedBy.AGENT,
              FailReason.AGENT_HUNG_UP: DisconnectedBy.AGENT,
              FailReason.END_USER_BUSY: DisconnectedBy.END_USER, FailReason.END_USER_REJECTED: DisconnectedBy.END_USER,
              FailReason.AGENT_NO_ANSWER: DisconnectedBy.SYSTEM, FailReason.END_USER_NO_ANSWER: DisconnectedBy.SYSTEM,
              FailReason.AGENT_NO_CHOICE: DisconnectedBy.SYSTEM}


@dataclass
class _State:
    phase: str = "new"    # new, ringing_agent, choosing, dialing, connected, closing, done
    agent_answered_at: float | None = None
    end_user_answered_at: float | None = None
    connected_at: float | None = None
    outbound_number: str | None = None
    choice_round: int = 0
    prompt_id: str | None = None
    legs: set[str] = field(default_factory=set)   # legs started and not ended
    seq: int = 0


class OutboundCall:
    def __init__(self, setup: OutboundSetup):
        self.setup = setup
        self.state = _State(outbound_number=setup.outbound_number)
        self.agent_leg = leg_id(setup.call_id, AGENT)
        self.end_user_leg = leg_id(setup.call_id, END_USER)

    @property
    def is_finished(self) -> bool:
        return self.state.phase == "done"

    def handle(self, event, now: float) -> list:
        s = self.state
        if s.phase == "done":
            return []
        if isinstance(event, Started):
            if s.phase != "new":
                raise IllegalEvent("started twice")
            return self._ring_agent(now)
        if isinstance(event, Lost):
            return self._lost(event.detail, now)
        if isinstance(event, LegRinging):
            return []
        if isinstance(event, LegAnswered):
            return self._answered(event.leg_id, now)
        if isinstance(event, LegEnded):
            return self._ended(event, now)
        if isinstance(event, DigitPressed):
            return self._digit(event, now)
        if isinstance(event, PlaybackFinished):
            return self._playback_finished(event.playback_id, now)
        if isinstance(event, TimerFired):
            return self._timer(event.timer_id, now)
        raise IllegalEvent(f"unknown event {event!r}")

    # -- steps ----------------------------------------------------------------------------

    def _ring_agent(self, now: float) -> list:
        s, setup = self.state, self.setup
        s.phase = "ringing_agent"
        s.legs.add(self.agent_leg)
        return [
            UpdateParticipant(AGENT, status=ParticipantStatus.CONNECTING, channel_id=self.agent_leg),
            # The agent sees whom they are calling.
            DialParty(AGENT, self.agent_leg, setup.agent_address, setup.end_user_address, setup.agent_ring_seconds),
            StartTimer(AGENT_RING, now + setup.agent_ring_seconds),
        ]

    def _answered(self, leg: str, now: float) -> list:
        s = self.state
        if leg == self.agent_leg and s.phase == "ringing_agent":
            s.agent_answered_at = now
            out = [CancelTimer(AGENT_RING),
                   UpdateParticipant(AGENT, status=ParticipantStatus.CONNECTED, connected_at=now)]
            if s.outbound_number is None:
                return out + self._offer_choice(now)
            return out + self._dial_end_user(now)
        if leg == self.end_user_leg and s.phase == "dialing":
            s.phase = "connected"
            s.end_user_answered_at = s.connected_at = now
            return [CancelTimer(END_USER_RING), Ringback(self.agent_leg, False),
                    BridgeParties(self.agent_leg, self.end_user_leg, self.setup.record),
                    UpdateParticipant(END_USER, status=ParticipantStatus.CONNECTED, connected_at=now),
                    UpdateCall(status=CallStatus.CONNECTED, connected_at=now,
                               wait_seconds=max(0.0, now - self.setup.created_at)),
                    StartTimer(MAX_CALL, now + self.setup.max_call_seconds)]
        return []  # a late or stray answer: the shell hangs up what the flow does not know

    def _offer_choice(self, now: float) -> list:
        s, setup = self.state, self.setup
        s.phase = "choosing"
        s.choice_round += 1
        s.seq += 1
        s.prompt_id = f"{setup.call_id}-choice-{s.seq}"
        digits = "".join(str(i) for i in range(1, len(setup.choices) + 1))
        return [Play(self.agent_leg, s.prompt_id, choice_prompt(setup.choices, setup.spoken_choices or setup.choices),
                     interrupt_digits=digits)]

    def _digit(self, event: DigitPressed, now: float) -> list:
        s, setup = self.state, self.setup
        if event.leg_id != self.agent_leg or s.phase != "choosing":
            return []
        if not event.digit.isdigit() or not 1 <= int(event.digit) <= len(setup.choices):
            return []  # a wrong key: the menu goes on
        s.outbound_number = setup.choices[int(event.digit) - 1]
        out = [CancelTimer(CHOICE)]
        if s.prompt_id:
            out.append(StopPlayback(s.prompt_id))
            s.prompt_id = None
        return out + [UpdateCall(outbound_number=s.outbound_number)] + self._dial_end_user(now)

    def _playback_finished(self, playback_id: str, now: float) -> list:
        s = self.state
        if playback_id != s.prompt_id:
            return []
        s.prompt_id = None
        if s.phase == "choosing":
            return [StartTimer(CHOICE, now + self.setup.choice_seconds)]
        if s.phase == "closing":
            return self._hang_up_all() + self._done()
        return []

    def _dial_end_user(self, now: float) -> list:
        s, setup = self.state, self.setup
        s.phase = "dialing"
        s.legs.add(self.end_user_leg)
        return [
            UpdateCall(status=CallStatus.CONNECTING),
            UpdateParticipant(END_USER, status=ParticipantStatus.CONNECTING, channel_id=self.end_user_leg),
            DialParty(END_USER, self.end_user_leg, setup.end_user_address, s.outbound_number,
                      setup.end_user_ring_seconds),
            Ringback(self.agent_leg, True),
            StartTimer(END_USER_RING, now + setup.end_user_ring_seconds),
        ]

    def _timer(self, timer_id: str, now: float) -> list:
        s = self.state
        if timer_id == AGENT_RING and s.phase == "ringing_agent":
            return self._fail(FailReason.AGENT_NO_ANSWER,
                              f"The agent did not answer within {self.setup.agent_ring_seconds:g} s", now)
        if timer_id == END_USER_RING and s.phase == "dialing":
            return self._fail(FailReason.END_USER_NO_ANSWER,
                              f"The end user did not answer within {self.setup.end_user_ring_seconds:g} s", now)
        if timer_id == CHOICE and s.phase == "choosing":
            if s.choice_round < CHOICE_ATTEMPTS:
                return self._offer_choice(now)
            return self._fail(FailReason.AGENT_NO_CHOICE, "The agent chose no outbound number on the keypad", now)
        if timer_id == MAX_CALL and s.phase == "connected":
            return self._hang_up_all() + self._finish(DisconnectedBy.SYSTEM, now)
        return []

    def _ended(self, event: LegEnded, now: float) -> list:
        s = self.state
        leg, cause = event.leg_id, event.cause
        if leg not in s.legs:
            return []
        s.legs.discard(leg)
        detail = event.detail
        if leg == self.agent_leg:
            if s.phase == "ringing_agent":
                return self._fail(_AGENT_FAILS.get(cause, FailReason.AGENT_UNREACHABLE),
                                  detail or "The agent's phone did not answer", now, agent_gone=True)
            if s.phase in ("choosing", "dialing"):
                return self._fail(FailReason.AGENT_HUNG_UP,
                                  "The agent hung up before the end user answered", now, agent_gone=True)
            if s.phase == "connected":
                return self._hang_up_all() + self._finish(DisconnectedBy.AGENT, now)
            if s.phase == "closing":
                return self._hang_up_all() + self._done()
            return []
        # the end user's leg
        if s.phase == "dialing":
            reason = _END_USER_FAILS.get(cause, FailReason.END_USER_UNREACHABLE)
            return self._fail(reason, detail or f"The end user's phone: {cause}", now)
        if s.phase == "connected":
            return self._hang_up_all() + self._finish(DisconnectedBy.END_USER, now)
        return []

    # -- endings --------------------------------------------------------------------------

    def _hang_up_all(self) -> list:
        out = [HangupLeg(leg) for leg in sorted(self.state.legs)]
        self.state.legs.clear()
        return out

    def _done(self) -> list:
        self.state.phase = "done"
        return []

    def _participant_end(self, party: ParticipantType, now: float, failed: FailReason | None) -> UpdateParticipant:
        s = self.state
        answered = s.agent_answered_at if party is AGENT else s.end_user_answered_at
        if answered is None:
            return UpdateParticipant(party, status=ParticipantStatus.FAILED, ended_at=now,
                                     fail_reason=failed or FailReason.NOTHING)
        return UpdateParticipant(party, status=ParticipantStatus.FINISHED, ended_at=now,
                                 talk_seconds=max(0.0, now - answered))

    def _finish(self, by: DisconnectedBy, now: float) -> list:
        s = self.state
        out = [CancelTimer(MAX_CALL),
               self._participant_end(AGENT, now, None), self._participant_end(END_USER, now, None),
               UpdateCall(status=CallStatus.FINISHED, disconnected_by=by, ended_at=now,
                          talk_seconds=max(0.0, now - s.connected_at))]
        return out + self._done()

    def _fail(self, reason: FailReason, details: str, now: float, *, agent_gone: bool = False) -> list:
        s = self.state
        out: list = [CancelTimer(t) for t in (AGENT_RING, END_USER_RING, CHOICE)]
        if s.prompt_id:
            out.append(StopPlayback(s.prompt_id))
            s.prompt_id = None
        # A participant who never answered failed for the call's reason (an end user never dialed too).
        out += [self._participant_end(AGENT, now, reason), self._participant_end(END_USER, now, reason)]
        out.append(UpdateCall(status=CallStatus.FAILED, fail_reason=reason, fail_details=details,
                              disconnected_by=_FAILED_BY.get(reason, DisconnectedBy.UNKNOWN), ended_at=now))
        # The agent, still on the line, hears why before the call ends.
        text = FAILED_TEXT.get(reason)
        if self.agent_leg in s.legs and s.agent_answered_at is not None and text and not agent_gone:
            out += [HangupLeg(leg) for leg in sorted(s.legs - {self.agent_leg})]
            s.legs &= {self.agent_leg}
            s.phase = "closing"
            s.seq += 1
            s.prompt_id = f"{self.setup.call_id}-end-{s.seq}"
            return out + [Ringback(self.agent_leg, False), Play(self.agent_leg, s.prompt_id, text)]
        return out + self._hang_up_all() + self._done()

    def _lost(self, detail: str, now: float) -> list:
        s = self.state
        if s.phase == "connected":
            return self._hang_up_all() + self._finish(DisconnectedBy.UNKNOWN, now)
        return self._fail(FailReason.LOST, detail or "The call was lost with the connection to Asterisk", now,
                          agent_gone=True)
