"""The engine's vocabulary: what it is given (a call's set-up), what it is told (events: past-tense
facts a shell reports) and what it asks for (commands: imperatives a shell executes in order).

Every flow of Hotline (the escalation of an incoming call, the notification conversation, and later
the contact-center flows) speaks these words, so one shell can drive any of them. All are frozen
dataclasses; none of them names a database column or a protocol detail: the log updates are typed
(:class:`UpdateLog`, :class:`UpdateItem`), and the store maps them to its columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeAlias

from ivr.core.admission import is_entry
from ivr.core.oncall import Window, parse_restrictions, restrictions_to_json, time_zone


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
LEG_ID_MARK = "-leg-"  # in every leg id, never in an Asterisk-made (caller) channel id
#: "cut_off": the leg stopped ringing because a dialplan Dial ringing it with others gave the
#: call to another leg that answered first (the FastAGI shell; ARI never reports it). "failed"
#: for a bridged leg: the shell could not bridge it with the caller.
LEG_END_CAUSES = frozenset({"busy", "failed", "no_answer", "hangup", "cut_off"})
DTMF_DIGITS = frozenset("0123456789*#ABCD")
ACCEPT_DIGIT = "1"


class IllegalEvent(ValueError):
    """An event that cannot happen for this call (a shell bug); the state is left unchanged."""


__all__ = [
    "ACCEPT_DIGIT", "CALLER", "DTMF_DIGITS", "LEG_END_CAUSES", "LEG_ID_MARK", "TERMINAL_STATUSES",
    "Answer", "AwaitDigit", "Bridge", "CallSetup", "CallStarted", "CallStatus", "CallerHungUp", "CancelTimer",
    "Command", "Contact", "Dial", "DialStarted", "DigitPressed", "Event", "HangupCaller", "HangupLeg",
    "IllegalEvent", "LegAnswered", "LegEnded", "LegRinging", "Play", "PlaybackFinished", "RecordCaller",
    "RecordingEnded", "Rule", "SaveVoicemail", "SayDigits", "StartRingback", "StartTimer", "StopPlayback",
    "StopRecording", "StopRingback", "TimerFired", "UpdateItem", "UpdateLog",
]


def _positive_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


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
    # The shell's dial operation ends unanswered legs itself at the rule's time (a dialplan
    # Dial(...,timeout)): the engine arms no rule timer and escalates when the rule's last leg ended.
    dial_enforces_timeout: bool = False
    # Who the policy takes calls from, and when (ivr.core.admission), decided by the engine when the
    # call starts. ``admitted``: a resumed call that had already rung someone, not screened again (a
    # call resumed before, perhaps during its refusal message, is). ``caller_e164``: the caller's
    # number in E.164, None when its caller ID is anonymous or not a number (it matches no entry).
    admitted: bool = False
    caller_e164: str | None = None
    caller_block_list: tuple[str, ...] = ()
    caller_allow_list: tuple[str, ...] = ()
    blocked_caller_message: str = ""
    # Business hours: a schedule layer's restriction windows (or their JSON form), read in the zone.
    business_hours: tuple[Window, ...] = ()
    business_hours_time_zone: str = "UTC"
    after_hours_message: str = ""
    # Voicemail after NoAnswer: once the no-answer message is said, the caller is invited to leave a
    # message, which is recorded (at most ``voicemail_max_seconds``; ``#``, a hang-up or
    # ``voicemail_max_silence`` seconds of silence end it). A shell that cannot record leaves it False.
    voicemail_on_no_answer: bool = False
    voicemail_max_seconds: float = 120.0
    voicemail_max_silence: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "caller_block_list", tuple(self.caller_block_list))
        object.__setattr__(self, "caller_allow_list", tuple(self.caller_allow_list))
        hours = self.business_hours
        if any(isinstance(window, dict) for window in hours):
            hours = parse_restrictions(list(hours))  # the JSON form (a snapshot, a test)
        object.__setattr__(self, "business_hours", tuple(hours))
        time_zone(self.business_hours_time_zone)  # ValueError for a zone that does not exist
        for entry in self.caller_block_list + self.caller_allow_list:
            if not is_entry(entry):
                raise ValueError(f"caller list entry {entry!r} is neither E.164 nor a prefix like +1415*")
        if not self.call_id:
            raise ValueError("call_id must not be empty")
        if self.repeat_times < 0:
            raise ValueError("repeat_times must be >= 0")
        if self.resume_repeat_count < 0:
            raise ValueError("resume_repeat_count must be >= 0")
        if not _positive_finite(self.confirm_timeout):
            raise ValueError("confirm_timeout must be > 0")
        if not (_positive_finite(self.voicemail_max_seconds) and _positive_finite(self.voicemail_max_silence)):
            raise ValueError("voicemail_max_seconds and voicemail_max_silence must be > 0")

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
            "dial_enforces_timeout": self.dial_enforces_timeout,
            "admitted": self.admitted,
            "caller_e164": self.caller_e164,
            "caller_block_list": list(self.caller_block_list),
            "caller_allow_list": list(self.caller_allow_list),
            "blocked_caller_message": self.blocked_caller_message,
            "business_hours": restrictions_to_json(self.business_hours),
            "business_hours_time_zone": self.business_hours_time_zone,
            "after_hours_message": self.after_hours_message,
            "voicemail_on_no_answer": self.voicemail_on_no_answer,
            "voicemail_max_seconds": self.voicemail_max_seconds,
            "voicemail_max_silence": self.voicemail_max_silence,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallSetup:
        fields_ = dict(data)
        fields_["rules"] = tuple(Rule.from_dict(r) for r in data["rules"])
        fields_["business_hours"] = parse_restrictions(data.get("business_hours") or [])
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
class DialStarted:
    """These legs started ringing only now (the shell's one dial operation was busy): their ring
    time counts from here."""

    leg_ids: tuple[str, ...]


@dataclass(frozen=True)
class CallerHungUp:
    pass


@dataclass(frozen=True)
class TimerFired:
    timer_id: str


@dataclass(frozen=True)
class RecordingEnded:
    """The recording ``name`` is over (finished: the caller pressed #, hung up, was silent or reached
    the maximum length; or it failed: ``ok`` False, ``detail`` says why)."""

    name: str
    ok: bool = True
    detail: str = ""


Event: TypeAlias = (
    CallStarted
    | PlaybackFinished
    | LegRinging
    | LegAnswered
    | DigitPressed
    | LegEnded
    | CallerHungUp
    | TimerFired
    | DialStarted
    | RecordingEnded
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
    # Keys that stop the playback (reported as DigitPressed instead of PlaybackFinished); flows
    # that only listen for keys between prompts leave it empty.
    interrupt_digits: str = ""


@dataclass(frozen=True)
class SayDigits:
    """Say ``digits`` one by one with the telephony server's own recordings of digits: never
    synthesized, so never written to a file (a secret such as a verification code is spoken this
    way). Reported like a :class:`Play`: PlaybackFinished, or DigitPressed for an interrupting key."""

    target: str  # CALLER or a leg id
    playback_id: str
    digits: str = field(repr=False)  # kept out of every repr (a log line, a traceback)
    interrupt_digits: str = ""

    def __post_init__(self) -> None:
        if not (self.digits.isascii() and self.digits.isdigit()):
            raise ValueError("SayDigits: digits must be 0-9, at least one")


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
class AwaitDigit:
    """Listen for one key on ``target`` for ``seconds``: report DigitPressed, or TimerFired(timer_id)."""

    target: str
    timer_id: str
    seconds: float


@dataclass(frozen=True)
class RecordCaller:
    """Record the caller's channel (after a beep) into ``name``; ``#`` ends it, and so do the caller's
    hang-up, ``max_silence_seconds`` of silence and ``max_seconds``. Reported as :class:`RecordingEnded`."""

    name: str
    max_seconds: float
    max_silence_seconds: float


@dataclass(frozen=True)
class StopRecording:
    """End the recording ``name`` now, keeping what it has."""

    name: str


@dataclass(frozen=True)
class SaveVoicemail:
    """Fetch the finished recording ``name`` and keep it as the call's voicemail (and announce it)."""

    name: str


def _changes(update: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: value for f in fields(update)
            if f.name not in skip and (value := getattr(update, f.name)) is not None}


@dataclass(frozen=True)
class UpdateLog:
    """Changes to the call's log (IncomingCallLog); a field left None is not changed. Times are on
    the clock of ``now``; the store maps each field to its column."""

    status: CallStatus | None = None
    status_message: str | None = None
    answered_by_user_id: str | None = None
    current_rule_order: int | None = None
    repeat_count: int | None = None
    ended_at: float | None = None
    talk_seconds: float | None = None

    def changes(self) -> dict[str, Any]:
        return _changes(self)


@dataclass(frozen=True)
class UpdateItem:
    """Changes to the ring attempt (IncomingCallLogItem) of ``leg_id``; None means unchanged."""

    leg_id: str
    status: CallStatus | None = None
    status_message: str | None = None
    is_answered: bool | None = None
    dial_seconds: float | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def changes(self) -> dict[str, Any]:
        return _changes(self, skip=("leg_id",))


Command: TypeAlias = (
    Answer
    | Play
    | SayDigits
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
    | AwaitDigit
    | RecordCaller
    | StopRecording
    | SaveVoicemail
)
