"""The escalation engine: a pure, sans-I/O state machine for one incoming call.

It knows nothing about Asterisk, Twilio, databases, clocks or asyncio. A shell (ARI, FastAGI,
Twilio) turns protocol traffic into *events* (past-tense facts), feeds them with the current time
to :meth:`EscalationCall.handle`, and executes the returned *commands* (imperatives) in order.
Time only enters as the ``now`` argument; the engine asks for timers with ``StartTimer`` and the
shell answers with ``TimerFired`` (the aioquic pattern). Because it is pure, every rule of the
product (who is rung, when, and what the logs say) is tested here without mocks.

Contract with the shell, in short:

* Leg ids (``f"{call_id}-leg-{n}"``) and playback ids (``f"{call_id}-pb-{n}"``) are chosen by the
  engine, so the shell can use them as Asterisk channel/playback ids and register them before it
  originates (StasisStart can arrive before the HTTP answer). Timer ids are ``rule:<n>`` (a new
  one for every rule started) and ``confirm:<leg_id>``; timers are absolute times on the clock of
  ``now``, and ``EscalationCall.pending_timers`` lists those the shell must have armed.
* The shell creates the IncomingCallLogItem row (status Ringing, startedAt) when it executes a
  ``Dial``; every later change to the log row or an item row comes as ``UpdateLog``/``UpdateItem``.
* The shell reports ``PlaybackFinished`` when a playback ends for any reason (also when it could
  not be played), otherwise the call would wait for it forever.
* Events made stale by ordinary telephony races are ignored (``handle`` returns ``[]``); input that
  cannot happen (an id the engine never issued, ``CallStarted`` twice) raises :class:`IllegalEvent`
  and leaves the state untouched.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeAlias

__all__ = [
    "CALLER",
    "DISABLED_MESSAGE",
    "DTMF_DIGITS",
    "LEG_END_CAUSES",
    "LEG_ID_MARK",
    "TERMINAL_STATUSES",
    "Answer",
    "Bridge",
    "CallSetup",
    "CallStarted",
    "CallState",
    "CallStatus",
    "CallerHungUp",
    "CancelTimer",
    "Command",
    "Contact",
    "Dial",
    "DigitPressed",
    "EscalationCall",
    "Event",
    "HangupCaller",
    "HangupLeg",
    "IllegalEvent",
    "LegAnswered",
    "LegEnded",
    "LegPhase",
    "LegRinging",
    "LegState",
    "Phase",
    "Play",
    "PlaybackFinished",
    "Rule",
    "StartRingback",
    "StartTimer",
    "StopPlayback",
    "StopRingback",
    "TimerFired",
    "UpdateItem",
    "UpdateLog",
    "confirmation_prompt",
    "escalation_plan",
    "speakable_number",
    "step",
]


class CallStatus(StrEnum):
    """Status shared by IncomingCallLog and IncomingCallLogItem (values are the API's strings)."""

    INITIATED = "Initiated"
    RINGING = "Ringing"
    CONNECTED = "Connected"
    ESCALATED = "Escalated"
    NO_ANSWER = "NoAnswer"
    FAILED = "Failed"
    COMPLETED = "Completed"
    CALLER_HUNG_UP = "CallerHungUp"
    BUSY = "Busy"


#: Statuses after which a log or an item row never changes again.
TERMINAL_STATUSES: frozenset[CallStatus] = frozenset(
    {
        CallStatus.NO_ANSWER,
        CallStatus.FAILED,
        CallStatus.COMPLETED,
        CallStatus.CALLER_HUNG_UP,
        CallStatus.BUSY,
    }
)

#: ``Play.target`` for the caller's channel (any other target is a leg id).
CALLER = "caller"
DISABLED_MESSAGE = "Sorry, this service is currently disabled."
LEG_ID_MARK = "-leg-"  # in every leg id, never in an Asterisk-made (caller) channel id
#: "cut_off": the leg stopped ringing because a dialplan Dial ringing it with others gave the
#: call to another leg that answered first (the FastAGI shell; ARI never reports it). "failed"
#: for a bridged leg: the shell could not bridge it with the caller.
LEG_END_CAUSES = frozenset({"busy", "failed", "no_answer", "hangup", "cut_off"})
DTMF_DIGITS = frozenset("0123456789*#ABCD")
ACCEPT_DIGIT = "1"
_SCHEMA_VERSION = 1


class IllegalEvent(ValueError):
    """An event that cannot happen for this call (a shell bug); the state is left unchanged."""


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Contact:
    """One verified number of a user: ``address`` is E.164 or a ``sip:`` URI."""

    user_id: str
    number_id: str
    address: str

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "number_id": self.number_id, "address": self.address}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contact:
        return cls(data["user_id"], data["number_id"], data["address"])


@dataclass(frozen=True)
class Rule:
    """An escalation rule whose target (user, schedule or team) the shell resolved at call start."""

    order: int
    rule_id: str
    name: str
    escalate_after_seconds: float
    contacts: tuple[Contact, ...]

    def __post_init__(self) -> None:
        # Accept lists from callers but store a tuple: the rule must stay hashable and immutable.
        object.__setattr__(self, "contacts", tuple(self.contacts))
        if not _positive_finite(self.escalate_after_seconds):
            raise ValueError(f"rule {self.rule_id!r}: escalate_after_seconds must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "rule_id": self.rule_id,
            "name": self.name,
            "escalate_after_seconds": self.escalate_after_seconds,
            "contacts": [c.to_dict() for c in self.contacts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        return cls(
            order=data["order"],
            rule_id=data["rule_id"],
            name=data["name"],
            escalate_after_seconds=data["escalate_after_seconds"],
            contacts=tuple(Contact.from_dict(c) for c in data["contacts"]),
        )


@dataclass(frozen=True)
class CallSetup:
    """Everything the engine needs about the call and its policy, fixed at call start."""

    call_id: str
    policy_name: str
    caller_number: str
    greeting: str
    no_answer_message: str
    no_one_available_message: str
    is_enabled: bool
    repeat_if_no_one_answers: bool
    repeat_times: int
    require_confirmation: bool
    confirm_timeout: float
    rules: tuple[Rule, ...]
    # A restarted controller resumes a call at a stored rule without answering/greeting again.
    resume_from_order: int | None = None
    resume_repeat_count: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.call_id:
            raise ValueError("call_id must not be empty")
        if self.repeat_times < 0:
            raise ValueError("repeat_times must be >= 0")
        if self.resume_repeat_count < 0:
            raise ValueError("resume_repeat_count must be >= 0")
        if not _positive_finite(self.confirm_timeout):
            raise ValueError("confirm_timeout must be > 0")

    @property
    def max_rounds(self) -> int:
        """How many times the whole rule list may be tried."""
        return self.repeat_times + 1 if self.repeat_if_no_one_answers else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "policy_name": self.policy_name,
            "caller_number": self.caller_number,
            "greeting": self.greeting,
            "no_answer_message": self.no_answer_message,
            "no_one_available_message": self.no_one_available_message,
            "is_enabled": self.is_enabled,
            "repeat_if_no_one_answers": self.repeat_if_no_one_answers,
            "repeat_times": self.repeat_times,
            "require_confirmation": self.require_confirmation,
            "confirm_timeout": self.confirm_timeout,
            "rules": [r.to_dict() for r in self.rules],
            "resume_from_order": self.resume_from_order,
            "resume_repeat_count": self.resume_repeat_count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallSetup:
        fields_ = dict(data)
        fields_["rules"] = tuple(Rule.from_dict(r) for r in data["rules"])
        return cls(**fields_)


# --------------------------------------------------------------------------------------------
# Events (past-tense facts reported by the shell)


@dataclass(frozen=True)
class CallStarted:
    """The caller's channel entered the application (or a restarted controller resumes it)."""


@dataclass(frozen=True)
class PlaybackFinished:
    playback_id: str


@dataclass(frozen=True)
class LegRinging:
    leg_id: str


@dataclass(frozen=True)
class LegAnswered:
    leg_id: str


@dataclass(frozen=True)
class DigitPressed:
    leg_id: str
    digit: str


@dataclass(frozen=True)
class LegEnded:
    """A leg is gone; ``cause`` is one of :data:`LEG_END_CAUSES` ("failed" covers a refused
    originate; "cut_off": another leg of the same Dial answered first)."""

    leg_id: str
    cause: str
    detail: str = ""  # what the shell knows of why (a SIP/Q.850 reason), for the item's statusMessage


@dataclass(frozen=True)
class CallerHungUp:
    pass


@dataclass(frozen=True)
class TimerFired:
    timer_id: str


Event: TypeAlias = (
    CallStarted
    | PlaybackFinished
    | LegRinging
    | LegAnswered
    | DigitPressed
    | LegEnded
    | CallerHungUp
    | TimerFired
)


# --------------------------------------------------------------------------------------------
# Commands (imperatives for the shell, to execute in the order given)


@dataclass(frozen=True)
class Answer:
    """Answer the caller's channel."""


@dataclass(frozen=True)
class Play:
    target: str  # CALLER or a leg id
    playback_id: str
    text: str


@dataclass(frozen=True)
class StopPlayback:
    playback_id: str


@dataclass(frozen=True)
class StartRingback:
    pass


@dataclass(frozen=True)
class StopRingback:
    pass


@dataclass(frozen=True)
class Dial:
    """Originate a leg to ``contact`` (ring for ``timeout`` s) and create its log item."""

    leg_id: str
    contact: Contact
    rule_order: int
    timeout: float
    rule_id: str  # for the item's incomingCallPolicyEscalationRuleId


@dataclass(frozen=True)
class Bridge:
    """Bridge the caller with this leg."""

    leg_id: str


@dataclass(frozen=True)
class HangupLeg:
    leg_id: str


@dataclass(frozen=True)
class HangupCaller:
    pass


@dataclass(frozen=True)
class StartTimer:
    timer_id: str
    at: float  # absolute, on the same clock as the ``now`` given to handle()


@dataclass(frozen=True)
class CancelTimer:
    timer_id: str


@dataclass(frozen=True)
class UpdateLog:
    """Set these camelCase fields on the call's IncomingCallLog row."""

    fields: dict[str, Any]


@dataclass(frozen=True)
class UpdateItem:
    """Set these camelCase fields on the IncomingCallLogItem row of ``leg_id``."""

    leg_id: str
    fields: dict[str, Any]


Command: TypeAlias = (
    Answer
    | Play
    | StopPlayback
    | StartRingback
    | StopRingback
    | Dial
    | Bridge
    | HangupLeg
    | HangupCaller
    | StartTimer
    | CancelTimer
    | UpdateLog
    | UpdateItem
)


# --------------------------------------------------------------------------------------------
# State


class Phase(StrEnum):
    NEW = "new"  # waiting for CallStarted
    GREETING = "greeting"  # greeting plays to the caller
    HUNTING = "hunting"  # legs of the escalation rules ring
    CONNECTED = "connected"  # caller bridged with one leg
    CLOSING = "closing"  # a final message plays before the engine hangs up the caller
    FINISHED = "finished"  # terminal log written; nothing more happens


class LegPhase(StrEnum):
    DIALING = "dialing"  # Dial sent, no news yet
    RINGING = "ringing"
    CONFIRMING = "confirming"  # answered, the "press 1" prompt plays
    BRIDGED = "bridged"
    ENDED = "ended"  # its item has its terminal status


_LIVE_LEG_PHASES = frozenset({LegPhase.DIALING, LegPhase.RINGING, LegPhase.CONFIRMING})
_UNANSWERED_LEG_PHASES = frozenset({LegPhase.DIALING, LegPhase.RINGING})


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
        return self.phase in _LIVE_LEG_PHASES

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
            ringback_on=data["ringback_on"],
            bridged_leg_id=data["bridged_leg_id"],
            connected_at=data["connected_at"],
            log_status=CallStatus(data["log_status"]),
            ended_at=data["ended_at"],
        )


# --------------------------------------------------------------------------------------------
# Helpers


def _positive_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _seconds(value: float) -> str:
    """30.0 -> "30", 2.5 -> "2.5": for status messages."""
    return f"{value:g}"


def _duration(start: float, end: float) -> float:
    # A clock that stepped back must not produce negative durations in the logs.
    return round(max(0.0, float(end - start)), 3)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@functools.lru_cache(maxsize=512)
def escalation_plan(setup: CallSetup) -> tuple[Rule, ...]:
    """The rules that will actually be rung: sorted by order (stable), contacts deduplicated by
    number_id within each rule, rules without contacts dropped."""
    plan: list[Rule] = []
    for rule in sorted(setup.rules, key=lambda r: r.order):
        seen: set[str] = set()
        contacts: list[Contact] = []
        for contact in rule.contacts:
            if contact.number_id not in seen:
                seen.add(contact.number_id)
                contacts.append(contact)
        if contacts:
            plan.append(replace(rule, contacts=tuple(contacts)))
    return tuple(plan)


def speakable_number(caller: str) -> str:
    """How text-to-speech should say the caller: "+1 555-0100" -> "plus 1 5 5 5 0 1 0 0".

    Digits are separated so TTS reads them one by one instead of as a huge number; a SIP URI is
    reduced to its user part; an empty or anonymous caller becomes "an unknown number".
    """
    text = caller.strip()
    if text.lower().startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1].split("@", 1)[0]
    compact = "".join(ch for ch in text if ch not in " -.()/")
    if (
        compact
        and all(ch.isdigit() or ch == "+" for ch in compact)
        and any(ch.isdigit() for ch in compact)
    ):
        words = ["plus" if ch == "+" else ch for ch in compact]
        return " ".join(words)
    if not text or text.lower() in {"anonymous", "unknown", "unavailable", "restricted"}:
        return "an unknown number"
    return text


def confirmation_prompt(setup: CallSetup) -> str:
    """What an answering leg hears, repeated until it presses 1 (shells may pre-synthesize it)."""
    return (
        f"Call for {setup.policy_name} from {speakable_number(setup.caller_number)}. "
        f"Press {ACCEPT_DIGIT} to accept."
    )


# --------------------------------------------------------------------------------------------
# The transition function


def step(state: CallState, event: Event, now: float) -> tuple[CallState, list[Command]]:
    """Apply one event at time ``now``; returns the new state and the commands to execute.

    Pure: the given state is never modified. Raises IllegalEvent for impossible input.
    """
    transition = _Transition(state, now)
    transition.apply(event)
    return transition.state, transition.commands


class _Transition:
    """One step's working area: the state being rebuilt (frozen values, replaced as it goes) and
    the commands emitted so far. Nothing escapes unless the whole step succeeds."""

    def __init__(self, state: CallState, now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []
        self.setup = state.setup
        self.plan = escalation_plan(state.setup)

    # ---- dispatch -------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if not isinstance(self.now, (int, float)) or not math.isfinite(self.now):
            raise IllegalEvent(f"now must be a finite number, got {self.now!r}")
        match event:
            case CallStarted():
                self.on_call_started()
            case PlaybackFinished(playback_id=playback_id):
                self.on_playback_finished(playback_id)
            case LegRinging(leg_id=leg_id):
                self.on_leg_ringing(self.known_leg(leg_id))
            case LegAnswered(leg_id=leg_id):
                self.on_leg_answered(self.known_leg(leg_id))
            case DigitPressed(leg_id=leg_id, digit=digit):
                leg = self.known_leg(leg_id)
                if digit not in DTMF_DIGITS:
                    raise IllegalEvent(f"not a DTMF digit: {digit!r}")
                self.on_digit_pressed(leg, digit)
            case LegEnded(leg_id=leg_id, cause=cause, detail=detail):
                leg = self.known_leg(leg_id)
                if cause not in LEG_END_CAUSES:
                    raise IllegalEvent(f"unknown leg end cause {cause!r}")
                self.on_leg_ended(leg, cause, detail)
            case CallerHungUp():
                self.on_caller_hung_up()
            case TimerFired(timer_id=timer_id):
                self.on_timer_fired(timer_id)
            case _:
                raise IllegalEvent(f"not an engine event: {event!r}")

    # ---- validation of ids the engine issued -----------------------------------------------

    def known_leg(self, leg_id: str) -> LegState:
        leg = self.state.leg(leg_id)
        if leg is None:
            raise IllegalEvent(f"leg {leg_id!r} was never dialed")
        return leg

    def playback_was_issued(self, playback_id: str) -> bool:
        prefix = f"{self.setup.call_id}-pb-"
        suffix = playback_id[len(prefix) :] if playback_id.startswith(prefix) else ""
        return suffix.isdigit() and 1 <= int(suffix) <= self.state.playback_count

    def timer_was_issued(self, timer_id: str) -> bool:
        kind, _, rest = timer_id.partition(":")
        if kind == "rule":
            return rest.isdigit() and 1 <= int(rest) <= self.state.rule_timer_count
        if kind == "confirm":
            leg = self.state.leg(rest)
            return (
                leg is not None and self.setup.require_confirmation and leg.answered_at is not None
            )
        return False

    # ---- small state helpers --------------------------------------------------------------

    def emit(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def update(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)

    def put_leg(self, leg: LegState) -> None:
        self.update(legs=tuple(leg if old.leg_id == leg.leg_id else old for old in self.state.legs))

    def live_legs(self) -> list[LegState]:
        return [leg for leg in self.state.legs if leg.is_live]

    def next_playback_id(self) -> str:
        count = self.state.playback_count + 1
        self.update(playback_count=count)
        return f"{self.setup.call_id}-pb-{count}"

    def play(self, target: str, text: str) -> str:
        playback_id = self.next_playback_id()
        self.emit(Play(target, playback_id, text))
        return playback_id

    def start_timer(self, timer_id: str, at: float) -> None:
        self.update(timers=self.state.timers + ((timer_id, at),))
        self.emit(StartTimer(timer_id, at))

    def forget_timer(self, timer_id: str) -> bool:
        """Drop a timer from the pending set; False if it was not pending."""
        remaining = tuple(t for t in self.state.timers if t[0] != timer_id)
        if len(remaining) == len(self.state.timers):
            return False
        self.update(timers=remaining)
        return True

    def cancel_timer(self, timer_id: str | None) -> None:
        if timer_id is not None and self.forget_timer(timer_id):
            self.emit(CancelTimer(timer_id))
        if timer_id is not None and timer_id == self.state.rule_timer_id:
            self.update(rule_timer_id=None)

    def cancel_all_timers(self) -> None:
        for timer_id, _ in self.state.timers:
            self.emit(CancelTimer(timer_id))
        self.update(timers=(), rule_timer_id=None)

    def stop_ringback(self) -> None:
        if self.state.ringback_on:
            self.emit(StopRingback())
            self.update(ringback_on=False)

    def end_leg(self, leg: LegState, status: CallStatus, message: str) -> None:
        """Give a not-connected leg its one terminal item status."""
        self.cancel_timer(f"confirm:{leg.leg_id}")
        self.emit(
            UpdateItem(
                leg.leg_id,
                {
                    "status": status,
                    "statusMessage": message,
                    "isAnswered": False,
                    "dialDurationInSeconds": _duration(leg.dialed_at, self.now),
                    "endedAt": self.now,
                },
            )
        )
        self.put_leg(
            replace(leg, phase=LegPhase.ENDED, item_status=status, prompt_playback_id=None)
        )

    def hang_up_leg(self, leg: LegState, status: CallStatus, message: str) -> None:
        self.emit(HangupLeg(leg.leg_id))
        self.end_leg(leg, status, message)

    def finish(
        self, status: CallStatus, message: str, *, hang_up_caller: bool, talk_seconds: float = 0.0
    ) -> None:
        """Write the one terminal log update; nothing happens after this."""
        self.cancel_all_timers()
        if hang_up_caller:
            self.stop_ringback()
            self.emit(HangupCaller())
        self.emit(
            UpdateLog(
                {
                    "status": status,
                    "statusMessage": message,
                    "endedAt": self.now,
                    "callDurationInSeconds": talk_seconds,
                }
            )
        )
        self.update(
            phase=Phase.FINISHED,
            log_status=status,
            ended_at=self.now,
            ringback_on=False,
            caller_playback_id=None,
            exhausted=False,
        )

    def close_with_message(self, status: CallStatus, message: str, text: str) -> None:
        """Tell the caller ``text``, then hang up and log ``status`` when it has been played."""
        self.stop_ringback()
        self.cancel_all_timers()
        if not text.strip():
            self.finish(status, message, hang_up_caller=True)
            return
        playback_id = self.play(CALLER, text)
        self.update(
            phase=Phase.CLOSING,
            caller_playback_id=playback_id,
            closing_status=status,
            closing_message=message,
            exhausted=False,
        )

    # ---- the hunt ---------------------------------------------------------------------------

    def hunt_from(self, position: int) -> None:
        """Ring the plan's rule at ``position``; past the last rule, repeat or give up."""
        if position >= len(self.plan):
            if self.state.repeat_count + 1 < self.setup.max_rounds:
                self.update(repeat_count=self.state.repeat_count + 1)
                position = 0
            else:
                self.out_of_rules()
                return
        self.start_rule(position)

    def start_rule(self, position: int) -> None:
        rule = self.plan[position]
        first_start = (
            self.state.rule_timer_count == 0 and self.state.repeat_count == 0 and position == 0
        )
        self.emit(
            UpdateLog(
                {
                    "status": CallStatus.RINGING if first_start else CallStatus.ESCALATED,
                    "currentEscalationRuleOrder": rule.order,
                    "repeatCount": self.state.repeat_count,
                }
            )
        )
        if not self.state.ringback_on:
            self.emit(StartRingback())
        # A number still deciding on an earlier rule's call is not rung twice; this rule waits
        # for that leg instead (see rule_has_candidates).
        busy_numbers = {leg.contact.number_id for leg in self.live_legs()}
        new_legs: list[LegState] = []
        for contact in rule.contacts:
            if contact.number_id in busy_numbers:
                continue
            leg_id = f"{self.setup.call_id}{LEG_ID_MARK}{len(self.state.legs) + len(new_legs) + 1}"
            self.emit(Dial(leg_id, contact, rule.order, rule.escalate_after_seconds, rule.rule_id))
            new_legs.append(
                LegState(
                    leg_id=leg_id,
                    contact=contact,
                    rule_order=rule.order,
                    escalate_after_seconds=rule.escalate_after_seconds,
                    phase=LegPhase.DIALING,
                    dialed_at=self.now,
                )
            )
        # A fresh id per rule start: a late TimerFired of an earlier rule can never be taken
        # for the current one.
        timer_count = self.state.rule_timer_count + 1
        timer_id = f"rule:{timer_count}"
        self.update(
            phase=Phase.HUNTING,
            rule_position=position,
            exhausted=False,
            legs=self.state.legs + tuple(new_legs),
            rule_timer_count=timer_count,
            rule_timer_id=timer_id,
            ringback_on=True,
            log_status=CallStatus.RINGING if first_start else CallStatus.ESCALATED,
        )
        self.start_timer(timer_id, self.now + rule.escalate_after_seconds)

    def out_of_rules(self) -> None:
        if self.live_legs():
            # Someone answered and is hearing the prompt: their confirm window still runs.
            self.update(exhausted=True, rule_timer_id=None)
            return
        rules = len(self.plan)
        rounds = self.state.repeat_count + 1
        message = (
            f"No one answered: all {_plural(rules, 'escalation rule')} "
            f"{'was' if rules == 1 else 'were'} tried {_plural(rounds, 'time')}"
        )
        self.close_with_message(CallStatus.NO_ANSWER, message, self.setup.no_answer_message)

    def escalate(self) -> None:
        """Leave the current rule (its ringing legs are already gone) for the next one."""
        self.cancel_timer(self.state.rule_timer_id)
        assert self.state.rule_position is not None
        self.hunt_from(self.state.rule_position + 1)

    def after_leg_closed(self) -> None:
        """A leg stopped being a candidate: escalate at once if the current rule has none left."""
        if self.state.phase is not Phase.HUNTING:
            return
        if self.state.exhausted:
            if not self.live_legs():
                self.out_of_rules()
            return
        if not self.rule_has_candidates():
            self.escalate()

    def rule_has_candidates(self) -> bool:
        """True while a live leg can still answer for the current rule (possibly a leg dialed by
        an earlier rule for the same number, still deciding whether to press 1)."""
        assert self.state.rule_position is not None
        numbers = {c.number_id for c in self.plan[self.state.rule_position].contacts}
        return any(leg.contact.number_id in numbers for leg in self.live_legs())

    def accept(self, leg: LegState) -> None:
        user_id = leg.contact.user_id
        self.cancel_all_timers()
        self.stop_ringback()
        if leg.prompt_playback_id is not None:
            # Asterisk cannot bridge a channel cleanly while it still plays the prompt.
            self.emit(StopPlayback(leg.prompt_playback_id))
        for other in self.live_legs():
            if other.leg_id != leg.leg_id:
                self.hang_up_leg(
                    other,
                    CallStatus.NO_ANSWER,
                    f"Call was answered elsewhere, by user {user_id}",
                )
        self.emit(Bridge(leg.leg_id))
        answered_at = leg.answered_at if leg.answered_at is not None else self.now
        self.emit(
            UpdateLog(
                {
                    "status": CallStatus.CONNECTED,
                    "statusMessage": f"Connected to user {user_id}",
                    "answeredByUserId": user_id,
                    "currentEscalationRuleOrder": leg.rule_order,
                }
            ),
            UpdateItem(
                leg.leg_id,
                {
                    "status": CallStatus.CONNECTED,
                    "statusMessage": (
                        f"Accepted by pressing {ACCEPT_DIGIT}"
                        if self.setup.require_confirmation
                        else "Answered"
                    ),
                    "isAnswered": True,
                    "dialDurationInSeconds": _duration(leg.dialed_at, answered_at),
                },
            ),
        )
        self.put_leg(
            replace(
                leg,
                phase=LegPhase.BRIDGED,
                answered_at=answered_at,
                prompt_playback_id=None,
                item_status=CallStatus.CONNECTED,
            )
        )
        self.update(
            phase=Phase.CONNECTED,
            bridged_leg_id=leg.leg_id,
            connected_at=self.now,
            log_status=CallStatus.CONNECTED,
            exhausted=False,
        )

    def complete(self, hung_up_by_caller: bool) -> None:
        """End a connected call: hang up the side that is still there and log the talk time."""
        leg_id = self.state.bridged_leg_id
        assert leg_id is not None and self.state.connected_at is not None
        leg = self.known_leg(leg_id)
        who = "the caller" if hung_up_by_caller else "the on-call user"
        message = f"Call completed; {who} hung up"
        if hung_up_by_caller:
            self.emit(HangupLeg(leg_id))
        self.emit(
            UpdateItem(
                leg_id,
                {"status": CallStatus.COMPLETED, "statusMessage": message, "endedAt": self.now},
            )
        )
        self.put_leg(replace(leg, phase=LegPhase.ENDED, item_status=CallStatus.COMPLETED))
        self.finish(
            CallStatus.COMPLETED,
            message,
            hang_up_caller=not hung_up_by_caller,
            talk_seconds=_duration(self.state.connected_at, self.now),
        )

    def connection_failed(self, leg: LegState, detail: str) -> None:
        """The user accepted but the two could not be connected: say so on both records."""
        reason = f": {detail}" if detail else ""
        self.emit(HangupLeg(leg.leg_id))
        self.emit(UpdateItem(leg.leg_id, {"status": CallStatus.FAILED, "endedAt": self.now,
                                          "statusMessage": f"Accepted, but could not be connected with the caller{reason}"}))
        self.put_leg(replace(leg, phase=LegPhase.ENDED, item_status=CallStatus.FAILED))
        self.finish(CallStatus.FAILED, f"Could not connect the caller with the on-call user{reason}",
                    hang_up_caller=True)

    # ---- event handlers ---------------------------------------------------------------------

    def on_call_started(self) -> None:
        if self.state.started:
            raise IllegalEvent("CallStarted twice")
        if self.state.phase is Phase.FINISHED:
            # The caller left before the shell reported the start: nothing to do any more.
            self.update(started=True)
            return
        self.update(started=True)
        resuming = self.setup.resume_from_order is not None
        if not resuming:
            self.emit(Answer())
        if not self.setup.is_enabled:
            self.close_with_message(CallStatus.FAILED, "Policy is disabled", DISABLED_MESSAGE)
        elif not self.plan:
            self.close_with_message(
                CallStatus.FAILED,
                "No on-call user available in any escalation rule",
                self.setup.no_one_available_message,
            )
        elif self.setup.resume_from_order is not None:
            resume_order = self.setup.resume_from_order
            position = next(
                (i for i, rule in enumerate(self.plan) if rule.order >= resume_order),
                len(self.plan),
            )
            self.update(repeat_count=self.setup.resume_repeat_count)
            self.hunt_from(position)
        elif self.setup.greeting.strip():
            playback_id = self.play(CALLER, self.setup.greeting)
            self.update(phase=Phase.GREETING, caller_playback_id=playback_id)
        else:
            self.hunt_from(0)

    def on_playback_finished(self, playback_id: str) -> None:
        if not self.playback_was_issued(playback_id):
            raise IllegalEvent(f"playback {playback_id!r} was never started")
        phase = self.state.phase
        if playback_id == self.state.caller_playback_id:
            self.update(caller_playback_id=None)
            if phase is Phase.GREETING:
                self.hunt_from(0)
            elif phase is Phase.CLOSING:
                assert self.state.closing_status is not None
                self.finish(
                    self.state.closing_status,
                    self.state.closing_message or "",
                    hang_up_caller=True,
                )
            return
        if phase is not Phase.HUNTING:
            return
        for leg in self.state.legs:
            if leg.prompt_playback_id == playback_id and leg.phase is LegPhase.CONFIRMING:
                # Repeat the prompt until the user presses 1 or the confirm window closes.
                self.put_leg(
                    replace(
                        leg,
                        prompt_playback_id=self.play(leg.leg_id, confirmation_prompt(self.setup)),
                    )
                )
                return

    def on_leg_ringing(self, leg: LegState) -> None:
        if leg.phase is LegPhase.DIALING and self.state.phase is Phase.HUNTING:
            self.put_leg(replace(leg, phase=LegPhase.RINGING))

    def on_leg_answered(self, leg: LegState) -> None:
        if leg.phase is LegPhase.ENDED:
            # Its end was decided without it (a lost event, a failed hang-up, an originate that timed
            # out but went through): whoever picked up must not wait in silence. (After the end of
            # the call, the shell hangs up such strays itself.)
            if self.state.phase is not Phase.FINISHED:
                self.emit(HangupLeg(leg.leg_id))
            return
        if leg.phase not in _UNANSWERED_LEG_PHASES or self.state.phase is not Phase.HUNTING:
            return  # a duplicate, or a leg that is already being hung up
        if not self.setup.require_confirmation:
            self.accept(replace(leg, answered_at=self.now))
            return
        playback_id = self.play(leg.leg_id, confirmation_prompt(self.setup))
        self.put_leg(
            replace(
                leg,
                phase=LegPhase.CONFIRMING,
                answered_at=self.now,
                prompt_playback_id=playback_id,
            )
        )
        self.start_timer(f"confirm:{leg.leg_id}", self.now + self.setup.confirm_timeout)

    def on_digit_pressed(self, leg: LegState, digit: str) -> None:
        if (
            digit == ACCEPT_DIGIT
            and leg.phase is LegPhase.CONFIRMING
            and self.state.phase is Phase.HUNTING
        ):
            self.accept(leg)

    def on_leg_ended(self, leg: LegState, cause: str, detail: str = "") -> None:
        if leg.phase is LegPhase.ENDED or self.state.phase is Phase.FINISHED:
            return
        if leg.phase is LegPhase.BRIDGED:
            if cause == "failed":  # the shell could not bridge them: nobody talked
                self.connection_failed(leg, detail)
            else:
                self.complete(hung_up_by_caller=False)
            return
        if leg.phase is LegPhase.CONFIRMING:
            self.end_leg(
                leg,
                CallStatus.NO_ANSWER,
                f"Answered but hung up before pressing {ACCEPT_DIGIT} to accept",
            )
        elif cause == "busy":
            self.end_leg(leg, CallStatus.BUSY, "Line busy")
        elif cause == "failed":
            reason = f": {detail}" if detail else ""
            self.end_leg(leg, CallStatus.FAILED, f"Call to {leg.contact.address} failed{reason}")
        elif cause == "no_answer":
            self.end_leg(
                leg,
                CallStatus.NO_ANSWER,
                f"Not answered within {_seconds(leg.escalate_after_seconds)} s",
            )
        elif cause == "cut_off":
            self.end_leg(
                leg, CallStatus.NO_ANSWER, detail or "Stopped ringing: another number answered first"
            )
        else:
            self.end_leg(leg, CallStatus.NO_ANSWER, "Hung up (declined) without answering")
        self.after_leg_closed()

    def on_caller_hung_up(self) -> None:
        phase = self.state.phase
        if phase is Phase.FINISHED:
            return
        if phase is Phase.CONNECTED:
            self.complete(hung_up_by_caller=True)
            return
        if phase is Phase.CLOSING:
            # The outcome was decided before the caller left; only the message was cut short.
            assert self.state.closing_status is not None
            self.finish(
                self.state.closing_status, self.state.closing_message or "", hang_up_caller=False
            )
            return
        for leg in self.live_legs():
            self.hang_up_leg(
                leg, CallStatus.CALLER_HUNG_UP, "Caller hung up before the call was accepted"
            )
        self.finish(
            CallStatus.CALLER_HUNG_UP,
            "Caller hung up before anyone accepted the call",
            hang_up_caller=False,
        )

    def on_timer_fired(self, timer_id: str) -> None:
        if not self.timer_was_issued(timer_id):
            raise IllegalEvent(f"timer {timer_id!r} was never started")
        if self.state.phase is Phase.FINISHED or not self.forget_timer(timer_id):
            return  # cancelled, or already fired
        if timer_id == self.state.rule_timer_id:
            self.update(rule_timer_id=None)
            for leg in self.live_legs():
                if leg.phase in _UNANSWERED_LEG_PHASES:
                    self.hang_up_leg(
                        leg,
                        CallStatus.NO_ANSWER,
                        f"Not answered within {_seconds(leg.escalate_after_seconds)} s",
                    )
            self.escalate()
            return
        leg = self.known_leg(timer_id.partition(":")[2])
        if leg.phase is LegPhase.CONFIRMING:
            self.hang_up_leg(
                leg,
                CallStatus.NO_ANSWER,
                f"Answered but did not press {ACCEPT_DIGIT} within "
                f"{_seconds(self.setup.confirm_timeout)} s (likely voicemail)",
            )
            self.after_leg_closed()


# --------------------------------------------------------------------------------------------
# The object shells hold on to


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
