"""The escalation engine: a pure, sans-I/O state machine for one incoming call.

It knows nothing about Asterisk, Twilio, databases, clocks or asyncio. A shell (ARI, FastAGI,
Twilio) turns protocol traffic into *events* (past-tense facts), feeds them with the current time
to :meth:`EscalationCall.handle`, and executes the returned *commands* (imperatives) in order.
Time only enters as the ``now`` argument; the engine asks for timers with ``StartTimer`` and the
shell answers with ``TimerFired`` (the aioquic pattern). Because it is pure, every rule of the
product (who is rung, when, and what the logs say) is tested here without mocks.

The engine is split along its seams: ``vocabulary`` (set-up, events, commands), ``state``,
``transitions`` (the step function), ``texts`` (what it says). This module is the surface shells
use: :class:`EscalationCall`, and everything of the vocabulary re-exported.

Contract with the shell, in short:

* Leg ids (``f"{call_id}-leg-{n}"``) and playback ids (``f"{call_id}-pb-{n}"``) are chosen by the
  engine, so the shell can use them as Asterisk channel/playback ids and register them before it
  originates (StasisStart can arrive before the HTTP answer). Timer ids are ``rule:<n>`` (a new
  one for every rule started) and ``confirm:<leg_id>``; timers are absolute times on the clock of
  ``now``, and ``EscalationCall.pending_timers`` lists those the shell must have armed.
* Voicemail after NoAnswer (``CallSetup.voicemail_on_no_answer``; a shell that cannot record leaves it
  False): instead of hanging up after the no-answer message, the engine plays the voicemail prompt, then
  asks for ``RecordCaller`` (a beep, ``#`` ends it) and waits for ``RecordingEnded``, which the shell
  reports also when the caller hung up during the recording (the timers ``voicemail`` and
  ``voicemail:caller-gone`` end it if that report never comes). The log ends ``NoAnswer`` (nobody
  answered) with a statusMessage saying whether a voicemail was left; ``SaveVoicemail``, the one
  command after the terminal log, asks the shell to keep the recording.
* The shell creates the IncomingCallLogItem row (status Ringing, startedAt) when it executes a
  ``Dial``; every later change to the log row or an item row comes as ``UpdateLog``/``UpdateItem``.
* The shell reports ``PlaybackFinished`` when a playback ends for any reason (also when it could
  not be played), otherwise the call would wait for it forever.
* A shell whose dial operation ends unanswered legs by itself at the rule's time (a dialplan
  ``Dial(...,timeout)``) sets ``CallSetup.dial_enforces_timeout``: the engine then arms no rule
  timer and escalates when the rule's last leg has ended; such a shell reports ``DialStarted``
  when the legs really start ringing (they may wait for the one dial operation the channel runs).
* ``now`` is Unix time (the shells give ``time.time()``): when the call starts, the engine reads it on
  the policy's clocks to decide whether it is inside the business hours (``CallSetup.business_hours``),
  and refuses a caller the policy's lists refuse (``ivr.core.admission``); a refused call hears its
  message, nobody is rung, and the log says Failed with the reason. A resumed call is screened
  again only if it had not rung anyone yet (``CallSetup.admitted``).
* Events made stale by ordinary telephony races are ignored (``handle`` returns ``[]``); input that
  cannot happen (an id the engine never issued, ``CallStarted`` twice) raises :class:`IllegalEvent`
  and leaves the state untouched.
"""

from __future__ import annotations

from ivr.core.state import CallState, LegPhase, LegState, Phase
from ivr.core.texts import DISABLED_MESSAGE, confirmation_prompt, speakable_number
from ivr.core.transitions import escalation_plan, step
from ivr.core.vocabulary import *  # noqa: F403 - the engine's surface is its vocabulary
from ivr.core.vocabulary import CallSetup, CallStatus, Command, Contact, Event
from ivr.core.vocabulary import __all__ as _VOCABULARY

__all__ = [*_VOCABULARY, "CallState", "DISABLED_MESSAGE", "EscalationCall", "LegPhase", "LegState", "Phase",
           "confirmation_prompt", "escalation_plan", "speakable_number", "step"]


class EscalationCall:
    """One call's engine: ``handle(event, now)`` returns the commands to execute."""

    def __init__(self, setup: CallSetup) -> None:
        self._state = CallState.initial(setup)

    @classmethod
    def from_state(cls, state: CallState) -> EscalationCall:
        """Rebuild an engine from a persisted snapshot (``CallState.from_dict``)."""
        call = cls.__new__(cls)
        call._state = state
        return call

    @classmethod
    def resume_connected(cls, setup: CallSetup, leg_id: str, contact: Contact, rule_order: int,
                         dialed_at: float, connected_at: float) -> EscalationCall:
        """Take over a call that was bridged when its controller stopped: either side's hang-up
        completes it, with the talk time counted from ``connected_at``."""
        leg = LegState(leg_id=leg_id, contact=contact, rule_order=rule_order, escalate_after_seconds=0.0,
                       phase=LegPhase.BRIDGED, dialed_at=dialed_at, answered_at=connected_at,
                       item_status=CallStatus.CONNECTED)
        return cls.from_state(CallState(setup=setup, phase=Phase.CONNECTED, started=True, legs=(leg,),
                                        bridged_leg_id=leg_id, connected_at=connected_at,
                                        log_status=CallStatus.CONNECTED))

    @property
    def state(self) -> CallState:
        return self._state

    @property
    def setup(self) -> CallSetup:
        return self._state.setup

    @property
    def is_finished(self) -> bool:
        return self._state.phase is Phase.FINISHED

    @property
    def pending_timers(self) -> dict[str, float]:
        """Timers the shell must have armed: timer_id -> absolute time."""
        return dict(self._state.timers)

    def handle(self, event: Event, now: float) -> list[Command]:
        # The state only changes when the whole step succeeded.
        self._state, commands = step(self._state, event, now)
        return commands
