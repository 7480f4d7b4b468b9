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

A caller who hangs up ends whichever phase runs. No I/O; ``now`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ivr.core.contact_center.queue import QueueOffer, QueueSetup, QueueStarted
from ivr.core.contact_center.voicemail import DeflectionFlow, DeflectionSetup, DeflectionStarted
from ivr.core.contact_center.walk import Deflect, EnterQueue, HandToPolicy, MenuWalk, Started, WalkSetup
from ivr.core.vocabulary import Answer, CallerHungUp, IllegalEvent


@dataclass(frozen=True)
class InboundSetup:
    walk: WalkSetup
    max_silence_seconds: float = 10.0


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

    @property
    def is_finished(self) -> bool:
        return self.done

    def handle(self, event, now: float) -> list:
        if self.done:
            return []
        if isinstance(event, Started):
            if self.phase is not None:
                raise IllegalEvent("started twice")
            self.phase = MenuWalk(self.setup.walk)
            return [Answer()] + self._follow(self.phase.handle(event, now), now)
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

    def _follow(self, commands: list, now: float) -> list:
        """Pass the phase's commands on, acting on its outcome."""
        out: list = []
        for command in commands:
            if isinstance(command, EnterQueue):
                out.append(LoadQueue(command.menu_id))
            elif isinstance(command, Deflect):
                self.phase = DeflectionFlow(DeflectionSetup(
                    self.setup.walk.call_id, command.deflection, command.reason, command.message,
                    command.max_record_seconds, self.setup.max_silence_seconds))
                out += self._follow(self.phase.handle(DeflectionStarted(), now), now)
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
