"""The caller lists' entries and matching, and business hours (ivr.core.admission): pure functions."""

from __future__ import annotations

import datetime as dt

import pytest

from ivr.core import admission
from ivr.core.oncall import parse_restrictions


@pytest.mark.parametrize(("given", "stored"), [
    ("+14155550100", "+14155550100"),
    ("+1 (415) 555-0100", "+14155550100"),
    ("(415) 555-0100", "+14155550100"),          # national: read in the default region
    ("+44 20 7183 8750", "+442071838750"),
    ("+1415*", "+1415*"),
    ("+1 415 *", "+1415*"),
    ("+44-20*", "+4420*"),
])
def test_entries_are_stored_normalized(given: str, stored: str) -> None:
    assert admission.normalize_entry(given, "US") == stored


@pytest.mark.parametrize(("given", "says"), [
    ("415*", "is not a prefix pattern"),
    ("+*", "is not a prefix pattern"),
    ("+1415**", "is not a prefix pattern"),
    ("+0415*", "is not a prefix pattern"),
    ("+1415555010012345678*", "is not a prefix pattern"),   # longer than any E.164 number
    ("sip:alice@example.com", "is not a phone number"),
    ("+1 415 555", "is not a valid phone number"),
    ("", "must be a phone number"),
    (42, "must be a phone number"),
])
def test_bad_entries_are_refused_with_a_clear_message(given, says) -> None:
    with pytest.raises(admission.EntryError) as raised:
        admission.normalize_entry(given, "US", "[2]")
    assert raised.value.where == "[2]" and says in raised.value.message


def test_a_list_is_checked_deduplicated_and_capped() -> None:
    assert admission.normalize_list(None, "US") == []
    assert admission.normalize_list(["+1415*", "(415) 555-0100", "+14155550100"], "US") == ["+1415*", "+14155550100"]
    with pytest.raises(admission.EntryError, match="must be a list"):
        admission.normalize_list("+14155550100", "US")
    with pytest.raises(admission.EntryError, match=r"^\[1\]: "):
        admission.normalize_list(["+14155550100", "nope"], "US")
    entries = [f"+1415555{n:04d}" for n in range(admission.MAX_LIST_ENTRIES)]
    assert len(admission.normalize_list(entries, "US")) == admission.MAX_LIST_ENTRIES
    with pytest.raises(admission.EntryError, match="at most 1000 entries"):
        admission.normalize_list(entries + ["+14155559999"], "US")


def test_matching_compares_e164_and_an_unknown_caller_matches_nothing() -> None:
    assert admission.entry_matches("+1415*", "+14155550100")
    assert not admission.entry_matches("+1415*", "+14165550100")
    assert admission.entry_matches("+14155550100", "+14155550100")
    assert not admission.entry_matches("+1415555010", "+14155550100")  # a number is not a prefix
    assert not admission.entry_matches("+1*", None) and not admission.entry_matches("+1*", "")
    assert admission.screen_caller(None, "anonymous", ("+1*",), ()) is None
    refusal = admission.screen_caller(None, "anonymous", (), ("+1*",))
    assert refusal is not None and refusal.reason.startswith("Blocked caller anonymous (not a phone number): ")


def test_business_hours_reuse_the_schedules_windows() -> None:
    windows = parse_restrictions([{"type": "Daily", "startTime": "22:00", "endTime": "06:00"}])  # wraps midnight
    paris = "Europe/Paris"
    assert admission.is_open(windows, paris, dt.datetime(2024, 3, 5, 21, 0))       # 22:00 in Paris (naive: UTC)
    assert not admission.is_open(windows, paris, dt.datetime(2024, 3, 5, 20, 59))
    assert admission.is_open(windows, paris, dt.datetime(2024, 3, 6, 4, 59, tzinfo=dt.timezone.utc))
    assert not admission.is_open(windows, paris, dt.datetime(2024, 3, 6, 5, 0, tzinfo=dt.timezone.utc))
    assert admission.is_open((), paris, dt.datetime(2024, 3, 6, 5, 0))
    refusal = admission.screen_hours(windows, paris, dt.datetime(2024, 3, 6, 12, 0))
    assert refusal is not None and refusal.reason == "Outside business hours (Europe/Paris, Wednesday 13:00 local time)"
