"""Notification calls, the pure part: what is placed (:class:`Notification`), what it costs, and the
conversation with whoever answers, as a flow on the engine's vocabulary.

The conversation speaks the message, then "Press 1 to acknowledge, press 9 to hear this again",
listens for a key, replays on 9, thanks and hangs up on 1, and gives up politely after
``max_prompts`` prompts without an answer (or ``MAX_REPLAYS`` replays). A verification call only
offers 9 (hear the code again). :class:`NotificationConversation` takes events (``PlaybackFinished``,
``DigitPressed``, ``TimerFired``, ``CallerHungUp``) and returns commands (``Play`` with the keys
that interrupt it, ``SayDigits``, ``AwaitDigit``, ``HangupCaller``); a shell executes them on the
answered channel.

A message is made of parts: texts, which are synthesized and cached like every prompt, and
:class:`Digits`, which are said with Asterisk's own recordings of digits (``SayDigits``) and so are
never synthesized, cached or written anywhere. A verification code is always such a part: a
cached prompt is named after its text, so a prompt holding the code would give the code away to
anyone who can list the prompt directory.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeAlias

from ivr.core.vocabulary import (
    CALLER,
    AwaitDigit,
    CallerHungUp,
    Command,
    DigitPressed,
    Event,
    HangupCaller,
    IllegalEvent,
    Play,
    PlaybackFinished,
    SayDigits,
    TimerFired,
)

PROMPT = "Press 1 to acknowledge, press 9 to hear this again."
VERIFICATION_PROMPT = "Press 9 to hear the code again."
ACKNOWLEDGED = "Acknowledged. Thank you, goodbye."
GOODBYE = "Goodbye."
VERIFICATION_INTRO = "Your Hotline verification code is"
VERIFICATION_AGAIN = "Again:"
VERIFICATION_LOGGED = "Your Hotline verification code is ******"   # what a verification call's Call Log says
MAX_MESSAGE = 1000
MAX_REPLAYS = 5


class NotifyInputError(ValueError):
    """Bad input for a notification call (the API answers 400)."""



@dataclass(frozen=True)
class Digits:
    """A part of a message said digit by digit with Asterisk's own recordings (``SayDigits``), never
    synthesized: a secret (a verification code) is never written to a file, and never shown in a repr."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not (self.value.isascii() and self.value.isdigit()):
            raise ValueError("Digits: 0-9 only, at least one")


Part: TypeAlias = str | Digits


def verification_message(code: str) -> tuple[Part, ...]:
    """"Your Hotline verification code is 4 8 2 9 1 3. Again: 4 8 2 9 1 3." The texts are synthesized
    (and cached: they hold nothing secret); the code is only ever said as digits."""
    return (VERIFICATION_INTRO, Digits(code), VERIFICATION_AGAIN, Digits(code))


@dataclass(frozen=True)
class Notification:
    """A call to place: its Call Log row's id, who, what to say."""

    call_log_id: uuid.UUID
    project_id: uuid.UUID
    to: str
    from_number: str | None
    message: str
    kind: str = "notification"               # or "verification"
    links: dict[str, str] = field(default_factory=dict)
    user_id: uuid.UUID | None = None
    number_id: uuid.UUID | None = None       # verification: the number whose code is spoken
    # verification: that code (a resend may replace it meanwhile); never in a repr, a log or a row
    code: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "verification" and not (self.code and self.code.isascii() and self.code.isdigit()):
            raise NotifyInputError("a verification call needs the code it speaks (digits)")

    def parts(self) -> tuple[Part, ...]:
        """What the call says before its prompt."""
        if self.kind == "verification":
            return verification_message(self.code)
        return (self.message,)

    def call_data(self) -> dict[str, Any]:
        if self.kind == "verification":
            return {"message": VERIFICATION_LOGGED, "kind": "verification",
                    "userIncomingCallNumberId": str(self.number_id)}
        return {"message": self.message, "kind": self.kind, **self.links}

    def to_payload(self) -> dict[str, Any]:
        """JSON for the outbox (a notification, never a verification call: it carries no code)."""
        return {"callLogId": str(self.call_log_id), "projectId": str(self.project_id), "to": self.to,
                "fromNumber": self.from_number, "message": self.message, "kind": self.kind, "links": self.links,
                "userId": str(self.user_id) if self.user_id else None}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Notification:
        return cls(uuid.UUID(data["callLogId"]), uuid.UUID(data["projectId"]), data["to"], data["fromNumber"],
                   data["message"], data["kind"], dict(data["links"]),
                   uuid.UUID(data["userId"]) if data.get("userId") else None)

    def response(self) -> dict[str, Any]:
        return {"_id": str(self.call_log_id), "toNumber": self.to, "fromNumber": self.from_number, "status": None,
                "callData": self.call_data()}


def rate_for(address: str, rates: dict[str, float]) -> float:
    """Cents per minute for ``address``: the longest matching prefix of ``notify.rates``.

    Prefixes of phone numbers are digits (a leading ``+`` is ignored on both sides); a prefix
    like ``sip:`` or ``sip:alice@`` matches SIP URIs as text. No match: 0.
    """
    is_sip = address.lower().startswith(("sip:", "sips:"))
    subject = address.lower() if is_sip else address.lstrip("+")
    best, best_len = 0.0, -1
    for prefix, rate in rates.items():
        key = str(prefix).strip()
        key = key.lower() if is_sip else key.lstrip("+")
        if (is_sip == key.startswith(("sip:", "sips:"))) and subject.startswith(key) and len(key) > best_len:
            best, best_len = float(rate), len(key)
    return best


def call_cost(address: str, answered_seconds: float | None, rates: dict[str, float]) -> int:
    """USD cents of an answered call: started minutes (at least one) times the rate, rounded up."""
    if answered_seconds is None or answered_seconds < 0:
        return 0
    minutes = max(1, math.ceil(answered_seconds / 60 - 1e-9))
    return int(math.ceil(minutes * rate_for(address, rates) - 1e-9))


@dataclass
class ConversationOutcome:
    """What the callee heard and did."""

    heard: bool = False           # the message played to its end at least once (or a key answered it)
    key: str | None = None        # "1": acknowledged
    replays: int = 0


class NotificationConversation:
    """The conversation of one answered notification call (message, prompt, key, goodbye)."""

    def __init__(self, message: str | Sequence[Part], *, verifying: bool, max_prompts: int,
                 digit_timeout: float):
        self.parts: tuple[Part, ...] = (message,) if isinstance(message, str) else tuple(message)
        if not self.parts:
            raise ValueError("a notification says something")
        self.verifying = verifying
        self.keys = "9" if verifying else "19"
        self.prompt = VERIFICATION_PROMPT if verifying else PROMPT
        self.max_prompts = max(1, int(max_prompts))
        self.digit_timeout = float(digit_timeout)
        self.outcome = ConversationOutcome()
        self.finished = False
        self._phase = "new"          # message, prompt, waiting, closing, done
        self._playback: str | None = None
        self._timer: str | None = None
        self._count = 0
        self._part = 0               # the part of the message being said
        self._unanswered_prompts = 0

    def texts(self) -> list[str]:
        """Every text the conversation may say (a shell synthesizes them before dialing): the
        message's digits are not among them, they are never synthesized."""
        texts = [part for part in self.parts if isinstance(part, str)]
        return [*dict.fromkeys(texts), self.prompt, ACKNOWLEDGED, GOODBYE]

    def start(self) -> list[Command]:
        if self._phase != "new":
            raise IllegalEvent("the conversation already started")
        return self._message()

    def handle(self, event: Event) -> list[Command]:
        if self.finished:
            return []
        match event:
            case CallerHungUp():
                self._done()
                return []
            case PlaybackFinished(playback_id=playback_id) if playback_id == self._playback:
                return self._played()
            case DigitPressed(leg_id=leg, digit=digit) if leg == CALLER and self._phase in (
                    "message", "prompt", "waiting", "closing"):
                return self._key(digit)
            case TimerFired(timer_id=timer_id) if timer_id == self._timer and self._phase == "waiting":
                return self._no_key()
        raise IllegalEvent(f"not expected in the {self._phase} phase: {event!r}")

    # -- transitions -------------------------------------------------------------------------

    def _played(self) -> list[Command]:
        if self._phase == "message":
            self._part += 1
            if self._part < len(self.parts):
                return self._play("message", self.parts[self._part])
            self.outcome.heard = True
            return self._play("prompt", self.prompt)
        if self._phase == "prompt":
            self._count += 1
            self._timer = f"digit:{self._count}"
            self._phase = "waiting"
            return [AwaitDigit(CALLER, self._timer, self.digit_timeout)]
        self._done()  # closing
        return [HangupCaller()]

    def _key(self, digit: str) -> list[Command]:
        if self._phase == "closing":
            self._done()
            return [HangupCaller()]
        valid = digit in self.keys
        if self._phase == "message" and not valid:
            return self._play("prompt", self.prompt)  # (cannot happen: only valid keys stop a playback)
        if not valid:
            return self._no_key()
        if digit == "1":
            self.outcome.key = "1"
            self.outcome.heard = True
            return self._play("closing", ACKNOWLEDGED)
        self.outcome.replays += 1
        if self.outcome.replays > MAX_REPLAYS:
            return self._play("closing", GOODBYE)
        return self._message()

    def _no_key(self) -> list[Command]:
        self._unanswered_prompts += 1
        if self._unanswered_prompts >= self.max_prompts:
            return self._play("closing", GOODBYE)
        return self._play("prompt", self.prompt)

    def _message(self) -> list[Command]:
        self._part = 0
        return self._play("message", self.parts[0])

    def _play(self, phase: str, part: Part) -> list[Command]:
        self._count += 1
        self._phase = phase
        self._playback = f"notify-pb-{self._count}"
        self._timer = None
        keys = "" if phase == "closing" else self.keys
        if isinstance(part, Digits):
            return [SayDigits(CALLER, self._playback, part.value, interrupt_digits=keys)]
        return [Play(CALLER, self._playback, part, interrupt_digits=keys)]

    def _done(self) -> None:
        self._phase = "done"
        self.finished = True
