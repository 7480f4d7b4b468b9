"""Who an Incoming Call Policy takes a call from, and when: its caller block and allow lists and its
business hours. Pure: no clock (the instant is given), no I/O.

*Caller lists.* An entry is an E.164 number (``+14155550100``: stored so, national spellings are
normalized by the API and ``hotline sync`` with phonenumbers) or a prefix pattern: ``+``, the first
digits of E.164 numbers, and ``*`` (``+1415*``: every number of area code 415). A caller is compared
by its number in E.164 (the store reads national caller IDs in ``sip.default_region``); a caller
whose ID is anonymous, empty or not a phone number has no E.164 number and **matches no entry**: it
passes a block list, and a non-empty allow list refuses it. A caller is refused when it matches an
entry of the block list (the block list wins over the allow list), or when the allow list is not
empty and it matches none of its entries.

*Business hours.* The windows of an on-call schedule layer's ``restrictionTimes`` (Daily and Weekly,
read on the clocks of the policy's time zone: ``ivr.core.oncall``, as a Call Menu's opening hours
are); none means always open.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ivr.core.oncall import DAY_NAMES, Window, aware, instant_to_local, time_zone, window_contains
from ivr.core.phone import InvalidNumber, to_e164

#: The most entries one list may hold (the API and ``hotline sync`` refuse more).
MAX_LIST_ENTRIES = 1000
BLOCK_LIST, ALLOW_LIST = "callerBlockList", "callerAllowList"
#: How the store names a call without caller ID (``CallSetup.caller_number``).
UNKNOWN_CALLER = "an unknown number"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_PREFIX = re.compile(r"^\+[1-9]\d{0,14}\*$")
_SEPARATORS = re.compile(r"[\s\-.()/]")


class EntryError(ValueError):
    """A list entry that is neither a phone number nor a prefix pattern; ``where`` names it (``[3]``)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def is_entry(text: Any) -> bool:
    """Whether ``text`` is an entry in its stored form (E.164, or ``+<digits>*``)."""
    return isinstance(text, str) and bool(_E164.match(text) or _PREFIX.match(text))


def normalize_entry(text: Any, region: str, where: str = "") -> str:
    """An entry as given by a person, in its stored form: a number in E.164 (national formats read in
    ``region``), a prefix pattern without its separators (``+1 415*`` -> ``+1415*``)."""
    if not isinstance(text, str) or not text.strip():
        raise EntryError(where, "must be a phone number (E.164, e.g. +14155550100) or a prefix pattern "
                                "like +1415*")
    compact = _SEPARATORS.sub("", text.strip())
    if compact.endswith("*"):
        if _PREFIX.match(compact):
            return compact
        raise EntryError(where, f"{text!r} is not a prefix pattern: write + then the first digits of the "
                                "E.164 numbers it covers, then * (e.g. +1415*)")
    try:
        return to_e164(text, region)
    except InvalidNumber as exc:
        raise EntryError(where, f"{exc} (an entry is a phone number, or a prefix pattern like +1415*)") from None


def normalize_list(value: Any, region: str) -> list[str]:
    """A whole list as given (``None``: empty), in stored form, duplicates dropped (the first kept)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise EntryError("", "must be a list of phone numbers and prefix patterns like +1415*")
    if len(value) > MAX_LIST_ENTRIES:
        raise EntryError("", f"at most {MAX_LIST_ENTRIES} entries (this list has {len(value)})")
    return list(dict.fromkeys(normalize_entry(item, region, f"[{i}]") for i, item in enumerate(value)))


def entry_matches(entry: str, e164: str | None) -> bool:
    if not e164:
        return False
    if entry.endswith("*"):
        return e164.startswith(entry[:-1])
    return e164 == entry


def first_match(entries: Iterable[str], e164: str | None) -> str | None:
    return next((entry for entry in entries if entry_matches(entry, e164)), None)


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: ``reason`` for the log's statusMessage, ``prompt`` names what the caller
    hears (``the after-hours message``)."""

    reason: str
    prompt: str


def screen_caller(e164: str | None, shown: str, block: tuple[str, ...], allow: tuple[str, ...]) -> Refusal | None:
    """The refusal of a caller by the lists, or None. ``shown``: the caller as the log shows it."""
    if e164:
        who = f"Blocked caller {e164}"
    elif shown.strip() and shown != UNKNOWN_CALLER:
        who = f"Blocked caller {shown} (not a phone number)"
    else:
        who = "Blocked caller with no caller ID"
    entry = first_match(block, e164)
    if entry is not None:
        how = "is in" if entry == e164 else "matches"
        return Refusal(f"{who}: {how} {entry} of the {BLOCK_LIST}", "the blocked-caller message")
    if allow and first_match(allow, e164) is None:
        if e164:
            return Refusal(f"{who}: not in the {ALLOW_LIST}", "the blocked-caller message")
        return Refusal(f"{who}: an unknown caller matches no entry of the {ALLOW_LIST}", "the blocked-caller message")
    return None


def is_open(windows: tuple[Window, ...], tz_name: str, at: dt.datetime) -> bool:
    """Whether ``at`` (aware, or naive UTC) is inside the business hours (no windows: always)."""
    if not windows:
        return True
    tz = time_zone(tz_name or "UTC")
    at = aware(at)
    return any(window_contains(window, tz, at) for window in windows)


def screen_hours(windows: tuple[Window, ...], tz_name: str, at: dt.datetime) -> Refusal | None:
    """The refusal of a call outside business hours, naming the policy's zone and local time."""
    if is_open(windows, tz_name, at):
        return None
    local = instant_to_local(at, time_zone(tz_name or "UTC"))
    when = f"{DAY_NAMES[local.weekday()]} {local:%H:%M}"
    return Refusal(f"Outside business hours ({tz_name or 'UTC'}, {when} local time)", "the after-hours message")
