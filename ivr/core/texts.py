"""What the escalation engine says: to callers and on-call users (prompts), and in the logs
(status messages). Kept apart so that wording changes never touch the transitions."""

from __future__ import annotations

from ivr.core.vocabulary import ACCEPT_DIGIT, CallSetup

DISABLED_MESSAGE = "Sorry, this service is currently disabled."
#: Said before the beep of a voicemail (an Incoming Call Policy's after NoAnswer, a contact-center deflection).
VOICEMAIL_PROMPT = "Please leave a message after the tone. Press the pound key when you are finished."


def seconds(value: float) -> str:
    """30.0 -> "30", 2.5 -> "2.5": for status messages."""
    return f"{value:g}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def refusal_message(reason: str, prompt: str, *, text: str, heard: bool) -> str:
    """The log's statusMessage of a refused call (outside business hours, a blocked caller): why, and
    what became of its message (played in full, cut short by the caller, or not set)."""
    if not text.strip():
        return f"{reason}: no {prompt.removeprefix('the ')} is set; the call was hung up at once"
    if heard:
        return f"{reason}: {prompt} was played"
    return f"{reason}: the caller hung up during {prompt}"


def voicemail_message(no_answer: str, outcome: str) -> str:
    """The log's statusMessage of a call that offered voicemail after nobody answered: why nobody
    answered, then what became of the voicemail."""
    return f"{no_answer}; {outcome}"


VOICEMAIL_LEFT = "the caller left a voicemail"
VOICEMAIL_NOT_LEFT = "the caller hung up before the voicemail tone: no voicemail was left"


def voicemail_failed(detail: str) -> str:
    return f"the voicemail could not be recorded: {detail or 'unknown error'}"
