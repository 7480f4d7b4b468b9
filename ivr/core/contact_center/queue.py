"""A queue offering a waiting caller to its agents, as a pure flow: events in, commands out.

The caller hears ringback while the call is ``queued``; every so often the ringback pauses for a
wait message. Offers go to the available agents of the queue: ``multicast`` rings them all at once,
``cascade`` rings group 1, adds group 2 after the group delay (group 1 keeps ringing), and so on;
each cast is an offer event (``offer_events``). An agent who answers hears who is calling and must
press 1 (:data:`ACCEPT_DIGIT`): their voicemail never takes a call. The first to press 1 wins; the
others are hung up. Then ``assigned -> connecting -> connected`` (the two are bridged) ``->
finished`` when either hangs up.

When no one is left to offer the call to, or no agent accepted within the queue's wait, the outcome
is :class:`~ivr.core.contact_center.walk.Deflect` with ``no_agent_available``: the shell takes the
caller to voicemail or a message. A caller who hangs up while queued fails the call
(``end_user_hung_up``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.contact_center.outbound import BridgeParties, DialParty
from ivr.core.contact_center.updates import UpdateCall, UpdateParticipant
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
from ivr.core.contact_center.walk import Deflect
from ivr.core.texts import speakable_number
from ivr.core.vocabulary import (
    ACCEPT_DIGIT,
    CALLER,
    LEG_ID_MARK,
    CancelTimer,
    DigitPressed,
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
    StopPlayback,
    StopRingback,
    TimerFired,
)

AGENT, END_USER = ParticipantType.AGENT, ParticipantType.END_USER
NEXT_GROUP, MAX_WAIT, ANNOUNCE, MAX_CALL = "next-group", "max-wait", "announce", "max-call"


@dataclass(frozen=True)
class QueueAgent:
    user_id: str
    address: str         # the agent's verified number or SIP URI
    group: int = 1       # cascade group, from 1


@dataclass(frozen=True)
class QueueSetup:
    call_id: str
    menu_id: str
    queue_name: str
    caller_number: str          # E.164 or what the network sent ("" unknown): said to the agent
    agents: tuple[QueueAgent, ...]
    offer_type: OfferType = OfferType.MULTICAST
    group_delay: float = 30.0
    ring_seconds: float = 30.0       # an offer rings an agent at most this long
    confirm_seconds: float = 10.0    # after the whisper, how long the agent has to press 1
    max_wait_seconds: float = 120.0  # no agent accepted by then: deflected
    announce_every: float = 30.0     # the wait message, every so often (0: never)
    no_agent: Deflection = Deflection.VOICEMAIL
    deflection_message: str = ""
    voicemail_seconds: float = 120.0
    callback_seconds: float = 900.0
    record: bool = False
    max_call_seconds: float = 7200.0
    queued_at: float = 0.0


@dataclass(frozen=True)
class QueueStarted:
    """The caller is in the queue (the shell loaded its agents)."""


def agent_leg(call_id: str, index: int) -> str:
    return f"{call_id}{LEG_ID_MARK}agent{index}"


def whisper_text(setup: QueueSetup) -> str:
    return (f"A call for {setup.queue_name} from {speakable_number(setup.caller_number or '')}. "
            f"Press {ACCEPT_DIGIT} to accept.")


@dataclass(frozen=True)
class AnnounceWait:
    """Say to the caller where they are in the queue (the shell knows how many wait before them) and
    how long they have waited: :func:`wait_text`. Reported like a :class:`Play`."""

    playback_id: str
    waited: float


def wait_text(waited: float, position: int | None = None) -> str:
    minutes = int(waited // 60)
    if minutes < 1:
        waited_text = "less than a minute"
    else:
        waited_text = "1 minute" if minutes == 1 else f"{minutes} minutes"
    where = ""
    if position is not None and position >= 1:
        where = "You are next in line. " if position == 1 else f"You are number {position} in line. "
    return (f"All our agents are busy. {where}You have waited {waited_text}. "
            "Please stay on the line; your call will be answered in turn.")


class QueueOffer:
    def __init__(self, setup: QueueSetup):
        self.setup = setup
        self.groups = sorted({a.group for a in setup.agents}) if setup.offer_type is OfferType.CASCADE else [1]
        self.next_group = 0                     # index into self.groups of the next to cast
        self.legs: dict[str, QueueAgent] = {}   # offered legs not ended
        self.whispering: dict[str, str] = {}    # leg -> whisper playback id (answered, not yet accepted)
        self.answered: set[str] = set()
        self.winner: str | None = None
        self.phase = "new"       # new, queued, connected, done
        self.announcement: str | None = None
        self.connected_at: float | None = None
        self.seq = 0

    @property
    def is_finished(self) -> bool:
        return self.phase == "done"

    def handle(self, event, now: float) -> list:
        if self.phase == "done":
            return []
        if isinstance(event, QueueStarted):
            if self.phase != "new":
                raise IllegalEvent("queue started twice")
            return self._start(now)
        if isinstance(event, LegRinging):
            return []
        if isinstance(event, LegAnswered):
            return self._answered(event.leg_id, now)
        if isinstance(event, DigitPressed):
            return self._digit(event, now)
        if isinstance(event, LegEnded):
            return self._ended(event, now)
        if isinstance(event, PlaybackFinished):
            return self._played(event.playback_id, now)
        if isinstance(event, TimerFired):
            return self._timer(event.timer_id, now)
        raise IllegalEvent(f"the queue does not expect {event!r}")

    # -- offers -------------------------------------------------------------------------------

    def _start(self, now: float) -> list:
        s = self.setup
        self.phase = "queued"
        out: list = [UpdateCall(status=CallStatus.QUEUED, menu_id=s.menu_id, queued_at=s.queued_at or now,
                                offer_type=s.offer_type), StartRingback()]
        if not s.agents:
            return out + self._deflect(now, "No agent of the queue is available")
        out.append(StartTimer(MAX_WAIT, now + s.max_wait_seconds))
        if s.announce_every > 0:
            out.append(StartTimer(ANNOUNCE, now + s.announce_every))
        return out + self._cast(now)

    def _cast(self, now: float) -> list:
        """Offer the call to the next group (multicast: everyone, as group 1)."""
        s = self.setup
        group = self.groups[self.next_group]
        self.next_group += 1
        members = [(i, a) for i, a in enumerate(s.agents)
                   if s.offer_type is not OfferType.CASCADE or a.group == group]
        out: list = [UpdateCall(offer_group=group, offer_at=now)]
        for index, agent in members:
            leg = agent_leg(s.call_id, index)
            self.legs[leg] = agent
            out += [DialParty(AGENT, leg, agent.address, s.caller_number if s.caller_number[:1] == "+" else None,
                              s.ring_seconds),
                    StartTimer(f"ring:{leg}", now + s.ring_seconds)]
        if self.next_group < len(self.groups):
            out.append(StartTimer(NEXT_GROUP, now + s.group_delay))
        return out

    def _answered(self, leg: str, now: float) -> list:
        if leg not in self.legs or leg in self.answered or self.phase != "queued":
            return []
        self.answered.add(leg)
        self.seq += 1
        playback = f"{self.setup.call_id}-whisper-{self.seq}"
        self.whispering[leg] = playback
        return [CancelTimer(f"ring:{leg}"), Play(leg, playback, whisper_text(self.setup), interrupt_digits=ACCEPT_DIGIT)]

    def _digit(self, event: DigitPressed, now: float) -> list:
        leg = event.leg_id
        if self.phase != "queued" or leg not in self.answered or leg not in self.legs or event.digit != ACCEPT_DIGIT:
            return []   # a key from an offer that already ended (its time ran out) takes nothing
        return self._accept(leg, now)

    def _accept(self, leg: str, now: float) -> list:
        s = self.setup
        agent = self.legs[leg]
        self.winner = leg
        self.phase = "connected"
        self.connected_at = now
        out: list = [CancelTimer(t) for t in (NEXT_GROUP, MAX_WAIT, ANNOUNCE)]
        out += [CancelTimer(f"ring:{other}") for other in self.legs]
        out += [CancelTimer(f"confirm:{other}") for other in self.legs]
        playing = self.whispering.pop(leg, None)
        if playing:
            out.append(StopPlayback(playing))
        for other in sorted(self.legs):
            if other != leg:
                out.append(HangupLeg(other))
        self.legs = {leg: agent}
        if self.announcement:
            out.append(StopPlayback(self.announcement))
            self.announcement = None
        out += [
            UpdateCall(status=CallStatus.ASSIGNED, agent_id=agent.user_id, assigned_at=now),
            UpdateParticipant(AGENT, status=ParticipantStatus.CONNECTING, user_id=agent.user_id,
                              address=agent.address, channel_id=leg),
            UpdateCall(status=CallStatus.CONNECTING),
            StopRingback(),
            BridgeParties(leg, CALLER, s.record),
            UpdateParticipant(AGENT, status=ParticipantStatus.CONNECTED, connected_at=now),
            UpdateParticipant(END_USER, status=ParticipantStatus.CONNECTED, connected_at=now),
            UpdateCall(status=CallStatus.CONNECTED, connected_at=now,
                       wait_seconds=max(0.0, now - (s.queued_at or now))),
            StartTimer(MAX_CALL, now + s.max_call_seconds),
        ]
        return out

    def _played(self, playback_id: str, now: float) -> list:
        if playback_id == self.announcement:
            self.announcement = None
            if self.phase != "queued":
                return []
            out: list = [StartRingback()]
            if self.setup.announce_every > 0:
                out.append(StartTimer(ANNOUNCE, now + self.setup.announce_every))
            return out
        for leg, playing in self.whispering.items():
            if playing == playback_id:
                self.whispering[leg] = ""
                if self.phase == "queued":
                    return [StartTimer(f"confirm:{leg}", now + self.setup.confirm_seconds)]
        return []

    def _timer(self, timer_id: str, now: float) -> list:
        if self.phase == "connected":
            if timer_id == MAX_CALL:
                return [HangupLeg(self.winner), HangupCaller()] + self._finish(DisconnectedBy.SYSTEM, now)
            return []
        if self.phase != "queued":
            return []
        if timer_id == NEXT_GROUP and self.next_group < len(self.groups):
            return self._cast(now)
        if timer_id == MAX_WAIT:
            return self._deflect(now, f"No agent accepted the call within {self.setup.max_wait_seconds:g} s")
        if timer_id == ANNOUNCE and self.announcement is None:
            self.seq += 1
            self.announcement = f"{self.setup.call_id}-wait-{self.seq}"
            return [StopRingback(), AnnounceWait(self.announcement, now - (self.setup.queued_at or now))]
        for prefix in ("ring:", "confirm:"):
            if timer_id.startswith(prefix):
                leg = timer_id[len(prefix):]
                if leg in self.legs:
                    # Not answered in time, or answered and not accepted: that agent's offer ends.
                    del self.legs[leg]
                    self.whispering.pop(leg, None)
                    return [HangupLeg(leg)] + self._exhausted(now)
        return []

    def _ended(self, event: LegEnded, now: float) -> list:
        leg = event.leg_id
        if self.phase == "connected" and leg == self.winner:
            return [HangupCaller()] + self._finish(DisconnectedBy.AGENT, now)
        if leg not in self.legs or self.phase != "queued":
            return []
        del self.legs[leg]
        self.whispering.pop(leg, None)
        return [CancelTimer(f"ring:{leg}"), CancelTimer(f"confirm:{leg}")] + self._exhausted(now)

    def _exhausted(self, now: float) -> list:
        """No leg left ringing or deciding, and no group left to add: no one will take the call."""
        if self.legs or self.next_group < len(self.groups):
            return []
        return self._deflect(now, "Every available agent of the queue was offered the call; none accepted")

    # -- endings ------------------------------------------------------------------------------

    def hung_up(self, now: float) -> list:
        """The caller left."""
        if self.phase == "connected":
            return [HangupLeg(self.winner)] + self._finish(DisconnectedBy.END_USER, now)
        if self.phase == "done":
            return []
        out = self._stop_all()
        self.phase = "done"
        return out + [
            UpdateParticipant(END_USER, status=ParticipantStatus.FAILED, fail_reason=FailReason.END_USER_HUNG_UP,
                              ended_at=now),
            UpdateCall(status=CallStatus.FAILED, fail_reason=FailReason.END_USER_HUNG_UP,
                       fail_details="The caller hung up while waiting in the queue",
                       disconnected_by=DisconnectedBy.END_USER, ended_at=now,
                       wait_seconds=max(0.0, now - (self.setup.queued_at or now)))]

    def _stop_all(self) -> list:
        out: list = [CancelTimer(t) for t in (NEXT_GROUP, MAX_WAIT, ANNOUNCE)]
        for leg in sorted(self.legs):
            out += [CancelTimer(f"ring:{leg}"), CancelTimer(f"confirm:{leg}"), HangupLeg(leg)]
        self.legs.clear()
        self.whispering.clear()
        if self.announcement:
            out.append(StopPlayback(self.announcement))
            self.announcement = None
        return out

    def _deflect(self, now: float, detail: str) -> list:
        s = self.setup
        out = self._stop_all() + [StopRingback()]
        self.phase = "done"
        return out + [UpdateCall(wait_seconds=max(0.0, now - (s.queued_at or now)), fail_details=detail),
                      Deflect(s.menu_id, s.no_agent, VoicemailReason.NO_AGENT_AVAILABLE, s.deflection_message,
                              s.voicemail_seconds, s.callback_seconds)]

    def _finish(self, by: DisconnectedBy, now: float) -> list:
        self.phase = "done"
        talk = max(0.0, now - (self.connected_at or now))
        return [CancelTimer(MAX_CALL),
                UpdateParticipant(AGENT, status=ParticipantStatus.FINISHED, ended_at=now, talk_seconds=talk),
                UpdateParticipant(END_USER, status=ParticipantStatus.FINISHED, ended_at=now, talk_seconds=talk),
                UpdateCall(status=CallStatus.FINISHED, disconnected_by=by, ended_at=now, talk_seconds=talk)]
