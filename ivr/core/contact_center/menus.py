"""Menus: the state a menu is in at a moment (its opening hours make an open menu after_hours by
themselves). Pure: the windows are the on-call schedules' restriction windows (ivr.core.oncall)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ivr.core.contact_center.vocabulary import MenuState
from ivr.core.oncall import parse_restrictions, time_zone, window_contains


def effective_state(state: str, opening_hours: Any, tz_name: str, at: dt.datetime) -> MenuState:
    """``state`` as set, except that an ``open`` menu with opening hours is ``after_hours`` outside
    them. ``opening_hours`` is the JSON of a schedule layer's ``restrictionTimes`` (Daily and Weekly
    windows, read in ``tz_name``); empty means always open. ``at``: naive UTC or aware."""
    state = MenuState(state)
    if state is not MenuState.OPEN:
        return state
    windows = parse_restrictions(opening_hours or [])
    if not windows:
        return state
    tz = time_zone(tz_name or "UTC")
    at = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    return state if any(window_contains(window, tz, at) for window in windows) else MenuState.AFTER_HOURS
