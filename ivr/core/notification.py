"""Notification calls, the pure part: what is placed (:class:`Notification`), what it costs, and the
conversation with whoever answers, as a flow on the engine's vocabulary.

The conversation speaks the message, then "Press 1 to acknowledge, press 9 to hear this again",
listens for a key, replays on 9, thanks and hangs up on 1, and gives up politely after
``max_prompts`` prompts without an answer (or ``MAX_REPLAYS`` replays). A verification call only
offers 9 (hear the code again). :class:`NotificationConversation` takes events (``PlaybackFinished``,
``DigitPressed``, ``TimerFired``, ``CallerHungUp``) and returns commands (``Play`` with the keys
that interrupt it, ``AwaitDigit``, ``HangupCaller``); a shell executes them on the answered channel.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

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
    TimerFired,
)

PROMPT = "Press 1 to acknowledge, press 9 to hear this again."
VERIFICATION_PROMPT = "Press 9 to hear the code again."
ACKNOWLEDGED = "Acknowledged. Thank you, goodbye."
GOODBYE = "Goodbye."
MAX_MESSAGE = 1000
MAX_REPLAYS = 5


class NotifyInputError(ValueError):
    """Bad input for a notification call (the API answers 400)."""



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
    code: str | None = None                  # verification: that code (a resend may replace it meanwhile)

    def call_data(self) -> dict[str, Any]:
        if self.kind == "verification":
            return {"message": "Your Hotline verification code is ******", "kind": "verification",
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


def spoken_code(code: str) -> str:
    digits = ", ".join(code)
    return f"Your Hotline verification code is {digits}. Again: {digits}."


@dataclass
class ConversationOutcome:
    """What the callee heard and did."""

    heard: bool = False           # the message played to its end at least once (or a key answered it)
    key: str | None = None        # "1": acknowledged
    replays: int = 0


class NotificationConversation:
    """The conversation of one answered notification call (message, prompt, key, goodbye)."""

    def __init__(self, message: str, *, verifying: bool, max_prompts: int, digit_timeout: float):
        self.message = message
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
        self._unanswered_prompts = 0

    def texts(self) -> list[str]:
        """Everything the conversation may say (a shell synthesizes it before dialing)."""
        return [self.message, self.prompt, ACKNOWLEDGED, GOODBYE]

    def start(self) -> list[Command]:
        if self._phase != "new":
            raise IllegalEvent("the conversation already started")
        return self._play("message", self.message)

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
        return self._play("message", self.message)

    def _no_key(self) -> list[Command]:
        self._unanswered_prompts += 1
        if self._unanswered_prompts >= self.max_prompts:
            return self._play("closing", GOODBYE)
        return self._play("prompt", self.prompt)

    def _play(self, phase: str, text: str) -> list[Command]:
        self._count += 1
        self._phase = phase
        self._playback = f"notify-pb-{self._count}"
        self._timer = None
        return [Play(CALLER, self._playback, text, interrupt_digits="" if phase == "closing" else self.keys)]

    def _done(self) -> None:
        self._phase = "done"
        self.finished = True
