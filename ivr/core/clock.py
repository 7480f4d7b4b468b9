"""Instants as Hotline stores them: naive UTC."""

from __future__ import annotations

import datetime as dt


class OutOfRange(ValueError):
    """A date-time that UTC cannot hold (year 1 with a positive offset, ...)."""


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 date-time (``Z`` or an offset; none means UTC) as naive UTC. ValueError if it is not
    one, or out of range."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise OutOfRange(f"{text!r} is out of range") from None
    return parsed
