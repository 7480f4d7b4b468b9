"""An inbound contact-center call, as a pure flow: the menu walk, then the queue's offer or a
deflection (voicemail, message), or the hand-over to an Incoming Call Policy.

One object for the shell to feed, whatever phase the call is in. Each phase is a flow of its own
(:mod:`walk`, :mod:`queue`, :mod:`voicemail`); this one passes events to the current phase and
reads its outcome:

* :class:`~walk.EnterQueue` -> :class:`LoadQueue`: the shell reads the queue's available agents
  (I/O) and feeds :class:`QueueLoaded`, which starts the offer;
* :class:`~walk.Deflect` (from the walk, or from the queue when no agent took the call) starts the
  deflection: voicemail or a message;
* :class:`~walk.HandToPolicy` goes out as it is: the shell hands the caller's channel to the
  escalation engine, and this flow is over.

A call of the API ("Voice Inbound (API)", or a scheduled call once fired) has no caller yet:
:class:`EndUserDial` first calls the end user (from the outbound number); once they answer, they are
the caller, queued in the call's menu.

A caller who hangs up ends whichever phase runs. No I/O; ``now`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ivr.core.contact_center.queue import QueueOffer, QueueSetup, QueueStarted
from ivr.core.contact_center.voicemail import DeflectionFlow, DeflectionSetup, DeflectionStarted
from ivr.core.contact_center.redirect import RedirectFlow, RedirectSetup, RedirectStarted
from ivr.core.contact_center.walk import Deflect, EnterQueue, HandToPolicy, MenuWalk, Redirect, Started, WalkSetup
from ivr.core.contact_center.outbound import DialParty
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
    Answer,
    CallerHungUp,
    CancelTimer,
    HangupLeg,
    IllegalEvent,
    LegAnswered,
    LegEnded,
    StartTimer,
    TimerFired,
)

END_USER = ParticipantType.END_USER
END_USER_RING = "end-user-ring"
_END_USER_FAILS = {"busy": FailReason.END_USER_BUSY, "no_answer": FailReason.END_USER_NO_ANSWER,
                   "rejected": FailReason.END_USER_REJECTED, "failed": FailReason.END_USER_UNREACHABLE,
                   "hangup": FailReason.END_USER_NO_ANSWER}


@dataclass(frozen=True)
class EndUserDial:
    """Call the end user first (a call of the API), then queue them in ``menu_id``."""

    menu_id: str
    address: str                 # E.164
    caller_id: str | None        # the outbound number shown to them
    ring_seconds: float = 30.0


@dataclass(frozen=True)
class InboundSetup:
    walk: WalkSetup               # the menus (a call of the API: its menu alone)
    max_silence_seconds: float = 10.0
    dial: EndUserDial | None = None
    can_call_back: bool = False   # the caller's number may be called back (a valid, not premium-rate number)
    caller_id: str | None = None  # the caller's E.164 number, shown to a redirection number
    ring_seconds: float = 30.0    # how long a redirection number rings


@dataclass(frozen=True)
class LoadQueue:
    """Read the queue ``menu_id``'s available agents and feed :class:`QueueLoaded`."""

    menu_id: str


@dataclass(frozen=True)
class QueueLoaded:
    setup: QueueSetup


class InboundCall:
    def __init__(self, setup: InboundSetup):
        self.setup = setup
        self.phase = None          # the running flow: MenuWalk, QueueOffer or DeflectionFlow
        self.done = False
        self.outcome = None        # how the call left the contact center's hands (HandToPolicy)
        self.awaiting_queue = False  # the walk chose a queue; its agents are being read
        self.dialing = False         # calling the end user (a call of the API)
        self.end_user_leg = f"{setup.walk.call_id}{LEG_ID_MARK}enduser"

    @property
    def is_finished(self) -> bool:
        return self.done

    def handle(self, event, now: float) -> list:
        if self.done:
            return []
        if isinstance(event, Started):
            if self.phase is not None or self.dialing:
                raise IllegalEvent("started twice")
            if self.setup.dial is not None:
                return self._dial_end_user(now)
            self.phase = MenuWalk(self.setup.walk)
            return [Answer()] + self._follow(self.phase.handle(event, now), now)
        if self.dialing:
            return self._while_dialing(event, now)
        if self.phase is None:
            raise IllegalEvent(f"{event!r} before the call started")
        if isinstance(event, CallerHungUp):
            out = self.phase.hung_up(now)
            # A recording goes on to its end (Asterisk reports it); anything else is over.
            if not isinstance(self.phase, DeflectionFlow) or self.phase.is_finished:
                self.done = True
            return out
        if isinstance(event, QueueLoaded):
            if not isinstance(self.phase, MenuWalk) or not self.phase.is_finished:
                raise IllegalEvent("a queue loaded outside of a walk's end")
            self.awaiting_queue = False
            self.phase = QueueOffer(replace(event.setup, queued_at=event.setup.queued_at or now))
            return self._follow(self.phase.handle(QueueStarted(), now), now)
        return self._follow(self.phase.handle(event, now), now)

    # -- a call of the API: the end user first -------------------------------------------------

    def _dial_end_user(self, now: float) -> list:
        dial = self.setup.dial
        self.dialing = True
        return [UpdateParticipant(END_USER, status=ParticipantStatus.CONNECTING, channel_id=self.end_user_leg),
                DialParty(END_USER, self.end_user_leg, dial.address, dial.caller_id, dial.ring_seconds),
                StartTimer(END_USER_RING, now + dial.ring_seconds)]

    def _while_dialing(self, event, now: float) -> list:
        if isinstance(event, LegAnswered) and event.leg_id == self.end_user_leg:
            self.dialing = False
            self.phase = MenuWalk(self.setup.walk)   # finished at once: the queue is the call's menu
            self.phase.done = True
            self.awaiting_queue = True
            return [CancelTimer(END_USER_RING), UpdateParticipant(END_USER, status=ParticipantStatus.WAITING),
                    LoadQueue(self.setup.dial.menu_id)]
        if isinstance(event, LegEnded) and event.leg_id == self.end_user_leg:
            reason = _END_USER_FAILS.get(event.cause, FailReason.END_USER_UNREACHABLE)
            return self._end_user_failed(reason, event.detail or f"The end user's phone: {event.cause}", now, [])
        if isinstance(event, TimerFired) and event.timer_id == END_USER_RING:
            return self._end_user_failed(FailReason.END_USER_NO_ANSWER,
                                         f"The end user did not answer within {self.setup.dial.ring_seconds:g} s",
                                         now, [HangupLeg(self.end_user_leg)])
        return []

    def _end_user_failed(self, reason: FailReason, detail: str, now: float, commands: list) -> list:
        self.dialing = False
        self.done = True
        by = DisconnectedBy.END_USER if reason in (FailReason.END_USER_BUSY, FailReason.END_USER_REJECTED) \
            else DisconnectedBy.SYSTEM
        return [CancelTimer(END_USER_RING), *commands,
                UpdateParticipant(END_USER, status=ParticipantStatus.FAILED, fail_reason=reason, ended_at=now),
                UpdateCall(status=CallStatus.FAILED, fail_reason=reason, fail_details=detail, disconnected_by=by,
                           ended_at=now)]

    def _follow(self, commands: list, now: float) -> list:
        """Pass the phase's commands on, acting on its outcome."""
        out: list = []
        for command in commands:
            if isinstance(command, EnterQueue):
                out.append(LoadQueue(command.menu_id))
            elif isinstance(command, Deflect):
                self.phase = DeflectionFlow(DeflectionSetup(
                    self.setup.walk.call_id, command.deflection, command.reason, command.message,
                    command.max_record_seconds, self.setup.max_silence_seconds, command.menu_id,
                    command.callback_seconds if self.setup.can_call_back else None))
                out += self._follow(self.phase.handle(DeflectionStarted(), now), now)
            elif isinstance(command, Redirect):
                self.phase = RedirectFlow(RedirectSetup(self.setup.walk.call_id, command.number,
                                                        self.setup.caller_id, self.setup.ring_seconds))
                out += self._follow(self.phase.handle(RedirectStarted(), now), now)
            elif isinstance(command, HandToPolicy):
                self.outcome = command
                self.done = True
                out.append(command)
            else:
                out.append(command)
        if self.phase.is_finished and not any(isinstance(c, LoadQueue) for c in out) \
                and not (isinstance(self.phase, MenuWalk) and self.awaiting_queue):
            self.done = True
        self.awaiting_queue = self.awaiting_queue or any(isinstance(c, LoadQueue) for c in out)
        return out
