"""Who is on call: on-call schedules as plain data, and the arithmetic that answers.

No I/O and no clock: a ``Schedule`` (frozen dataclasses) and an instant go in, an ``OnCall``
comes out. The database side (``ivr/store/schedules.py``) builds the dataclasses from the rows; the
call controller, the API (``GET /api/on-call-duty-policy-schedule/:id/on-call``) and the CLI
(``hotline oncall``) all ask ``who_is_on_call`` and ``next_handoffs``.

Semantics
=========

*Time zone.* A schedule has one IANA time zone. Every wall-clock notion of the schedule
(hand-off time, rotation length, restriction windows) is read on its clocks.

*Rotation.* A layer's users take turns, in their order, in shifts of N hours, days or weeks.
The lengths are counted on the wall clock, so that hand-offs stay at the configured local time
across daylight-saving changes: a daily hand-off at 09:00 is at 09:00 local every day, and the
shift that spans the change lasts 23 or 25 hours of elapsed time. Users therefore get equal
shares of *wall-clock* time over whole cycles (in elapsed time, a shift that spans a change is
an hour shorter or longer).

*Anchor.* The shifts are aligned on the layer's anchor: the hand-off time (default: the local
time of the layer's start) on the local date of the start, moved back by whole rotations if it
falls after the start. Shift ``k`` is ``[anchor + k * length, anchor + (k + 1) * length)`` in
local time and belongs to ``users[k mod n]``. The layer covers no one before its start, so the
first user's first shift may be partial: a weekly layer starting on Monday at 14:00 with a
09:00 hand-off gives its first user Monday 14:00 to the next Monday 09:00. Hour rotations use
the hand-off time the same way (8-hour shifts handing off at 06:00 run 06-14, 14-22, 22-06).

*Restrictions.* Optional windows of local time outside which the layer covers no one: daily
(``09:00``-``17:00``, optionally only on some weekdays: the days on which the window opens) or
weekly (``Monday 09:00``-``Friday 17:00``, one continuous stretch). A window whose end is not
after its start wraps past midnight (daily) or the end of the week (weekly); a window whose end
equals its start is a whole day or week. Windows add up (a moment in any window is covered).
Restrictions never pause the rotation: the rotation keeps turning in the gaps, and inside a
window the layer's user is whoever's shift it is.

*Layers and overrides.* Where several layers cover a moment, the later layer (higher order)
wins; a layer with no users, or outside its windows, covers no one and lets the earlier layers
show through. An override (user, start, end) wins over every layer from its start (inclusive) to
its end (exclusive); where overrides overlap, the later one (created last) wins.

*Nonexistent and ambiguous local times.* A local time becomes an instant by
``local_to_instant``: an ambiguous time (in the hour repeated when clocks go back) is its first
occurrence; a nonexistent time (skipped when clocks go forward) is the instant the clock jumps
over it (so a 02:30 hand-off on the night clocks go from 02:00 to 03:00 happens at 03:00). This
mapping never goes backwards, so shifts and windows are intervals of instants that neither
overlap nor flip back and forth during the repeated hour. A shift that lies wholly inside a
skipped hour (hour rotations only) lasts no time at all: its user is skipped that once, and the
rotation goes on in its order.

*Instants.* Every instant given or returned is an aware datetime; a naive one given is read as
UTC (the database's convention).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ALL_DAYS = frozenset(range(7))
HORIZON = dt.timedelta(days=366)
"""How far ahead ``next_handoffs`` looks by default."""
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=UTC)
"""The instants schedules are computed for (starts, ends, moments asked about): far enough from the
ends of ``datetime``'s range that every computation around them stays inside it."""


def in_range(instant: dt.datetime) -> bool:
    return EARLIEST <= aware(instant) <= LATEST


class RotationInterval(str, enum.Enum):
    HOUR = "Hour"
    DAY = "Day"
    WEEK = "Week"

    def length(self, count: int) -> dt.timedelta:
        """A rotation of ``count`` intervals, as wall-clock time."""
        unit = {"Hour": dt.timedelta(hours=1), "Day": dt.timedelta(days=1), "Week": dt.timedelta(weeks=1)}
        return unit[self.value] * count


# -- local time <-> instants ----------------------------------------------------------------


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Paris)") from None


def aware(instant: dt.datetime) -> dt.datetime:
    """``instant`` in UTC; a naive datetime is read as UTC."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def instant_to_local(instant: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The wall-clock time (naive) that the clocks of ``tz`` show at ``instant``."""
    return aware(instant).astimezone(tz).replace(tzinfo=None)


def local_to_instant(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant (UTC) of the wall-clock time ``local`` in ``tz``.

    Ambiguous: the first occurrence. Nonexistent: the instant the clocks jump over it. Never goes
    backwards: a later local time never gives an earlier instant.
    """
    instant = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant  # exists; fold=0 is the first occurrence when it is ambiguous
    # In a gap, the two folds give the instants just before and just after the transition.
    other = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((instant, other))
    lo_s, hi_s = int(lo.timestamp()) - 1, int(hi.timestamp()) + 1
    # The transition is the first whole second whose local time is not before ``local``
    # (tz database transitions fall on whole seconds).
    while lo_s + 1 < hi_s:
        mid = (lo_s + hi_s) // 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= local:
            hi_s = mid
        else:
            lo_s = mid
    return dt.datetime.fromtimestamp(hi_s, UTC)


# -- restriction windows --------------------------------------------------------------------

LocalSpan = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class DailyWindow:
    """Every day (or only on ``days``, 0 = Monday: the days on which it opens), ``start`` to ``end``."""

    start: dt.time
    end: dt.time
    days: frozenset[int] = ALL_DAYS

    def occurrences(self, around: dt.date, before: int = 1, after: int = 1) -> Iterator[LocalSpan]:
        """The window's local (start, end) on the days around ``around``."""
        for offset in range(-before, after + 1):
            day = around + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start = dt.datetime.combine(day, self.start)
            end = dt.datetime.combine(day, self.end)
            if end <= start:
                end += dt.timedelta(days=1)
            yield start, end

    def lookahead(self) -> int:
        return 8 if self.days != ALL_DAYS else 2


@dataclass(frozen=True)
class WeeklyWindow:
    """Every week from ``start_day`` at ``start`` to ``end_day`` at ``end`` (0 = Monday), continuously."""

    start_day: int
    start: dt.time
    end_day: int
    end: dt.time

    def occurrences(self, around: dt.date, before: int = 1, after: int = 1) -> Iterator[LocalSpan]:
        """The window's local (start, end) in the weeks around ``around``."""
        monday = around - dt.timedelta(days=around.weekday())
        for weeks in range(-before, after + 1):
            week = monday + dt.timedelta(weeks=weeks)
            start = dt.datetime.combine(week + dt.timedelta(days=self.start_day), self.start)
            end = dt.datetime.combine(week + dt.timedelta(days=self.end_day), self.end)
            if end <= start:
                end += dt.timedelta(weeks=1)
            yield start, end

    def lookahead(self) -> int:
        return 2


Window = Union[DailyWindow, WeeklyWindow]


def window_contains(window: Window, tz: ZoneInfo, instant: dt.datetime) -> bool:
    today = instant_to_local(instant, tz).date()
    return any(local_to_instant(start, tz) <= instant < local_to_instant(end, tz)
               for start, end in window.occurrences(today))


def next_window_edge(window: Window, tz: ZoneInfo, instant: dt.datetime) -> dt.datetime | None:
    """The first instant after ``instant`` where ``window`` opens or closes."""
    today = instant_to_local(instant, tz).date()
    edges = [local_to_instant(edge, tz)
             for occurrence in window.occurrences(today, after=window.lookahead()) for edge in occurrence]
    later = [edge for edge in edges if edge > instant]
    return min(later) if later else None


# -- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """Users in rotation order, taking shifts of ``count`` ``interval``s from ``start`` (an instant)."""

    users: tuple[str, ...]
    start: dt.datetime
    interval: RotationInterval = RotationInterval.WEEK
    count: int = 1
    handoff: dt.time | None = None
    restrictions: tuple[Window, ...] = ()
    id: str = ""
    name: str = ""

    def __post_init__(self):
        if self.count < 1:
            raise ValueError("a rotation is at least 1 interval long")
        object.__setattr__(self, "users", tuple(self.users))
        object.__setattr__(self, "start", aware(self.start))
        object.__setattr__(self, "interval", RotationInterval(self.interval))
        object.__setattr__(self, "restrictions", tuple(self.restrictions))

    @property
    def length(self) -> dt.timedelta:
        return self.interval.length(self.count)


@dataclass(frozen=True)
class Override:
    """``user`` is on call from ``start`` (inclusive) to ``end`` (exclusive), whatever the layers say."""

    user: str
    start: dt.datetime
    end: dt.datetime
    id: str = ""
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "start", aware(self.start))
        object.__setattr__(self, "end", aware(self.end))

    def covers(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True)
class Schedule:
    """Layers in order (a later one wins) and overrides in order (a later one wins), in one time zone."""

    time_zone: str = "UTC"
    layers: tuple[Layer, ...] = ()
    overrides: tuple[Override, ...] = ()
    id: str = ""
    name: str = ""

    def __post_init__(self):
        time_zone(self.time_zone)  # fails early on an unknown zone
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "overrides", tuple(self.overrides))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class OnCall:
    """Who is on call (``user`` None: no one), and what put them there."""

    user: str | None
    layer: Layer | None = None
    override: Override | None = None


@dataclass(frozen=True)
class Handoff:
    """At ``at``, the on-call person becomes ``on_call.user``."""

    at: dt.datetime
    on_call: OnCall


@dataclass(frozen=True)
class Shift:
    start: dt.datetime
    end: dt.datetime
    user: str


# -- one layer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rotation:
    """A layer's shifts in one time zone: shift ``k`` starts at ``handoff(k)``."""

    layer: Layer
    tz: ZoneInfo
    anchor: dt.datetime = field(init=False)

    def __post_init__(self):
        start_local = instant_to_local(self.layer.start, self.tz)
        anchor = start_local
        if self.layer.handoff is not None:
            anchor = dt.datetime.combine(start_local.date(), self.layer.handoff)
            if anchor > start_local:
                length = self.layer.length
                anchor -= length * -(-(anchor - start_local) // length)  # whole rotations back
        object.__setattr__(self, "anchor", anchor)

    def handoff(self, k: int) -> dt.datetime:
        return local_to_instant(self.anchor + self.layer.length * k, self.tz)

    def index(self, instant: dt.datetime) -> int:
        """The shift ``k`` with ``handoff(k) <= instant < handoff(k + 1)``."""
        k = (instant_to_local(instant, self.tz) - self.anchor) // self.layer.length
        while self.handoff(k) > instant:
            k -= 1
        while self.handoff(k + 1) <= instant:
            k += 1
        return k

    def user(self, k: int) -> str:
        users = self.layer.users
        return users[k % len(users)]


def _covered_by_windows(layer: Layer, tz: ZoneInfo, instant: dt.datetime) -> bool:
    return not layer.restrictions or any(window_contains(w, tz, instant) for w in layer.restrictions)


def layer_user_at(layer: Layer, tz: ZoneInfo, instant: dt.datetime) -> str | None:
    """The user ``layer`` puts on call at ``instant``, or None where it covers no one."""
    instant = aware(instant)
    if not layer.users or instant < layer.start or not _covered_by_windows(layer, tz, instant):
        return None
    rotation = _Rotation(layer, tz)
    return rotation.user(rotation.index(instant))


def layer_shifts(layer: Layer, tz: ZoneInfo, since: dt.datetime, until: dt.datetime) -> Iterator[Shift]:
    """The rotation's shifts between ``since`` and ``until`` (clipped to them and to the layer's
    start), ignoring restrictions. Shifts of no duration (inside a skipped hour) are left out."""
    since, until = max(aware(since), layer.start), aware(until)
    if not layer.users or since >= until:
        return
    rotation = _Rotation(layer, tz)
    k = rotation.index(since)
    start = since
    while start < until:
        end = min(rotation.handoff(k + 1), until)
        if end > start:
            yield Shift(start, end, rotation.user(k))
        start = max(start, end)
        k += 1


def _layer_next_change(layer: Layer, tz: ZoneInfo, instant: dt.datetime) -> dt.datetime | None:
    """The first instant after ``instant`` where the layer's answer may change."""
    if not layer.users:
        return None
    candidates = []
    if instant < layer.start:
        candidates.append(layer.start)
    else:
        rotation = _Rotation(layer, tz)
        k = rotation.index(instant)
        current = rotation.user(k)
        for step in range(1, len(layer.users) + 1):  # the next hand-off to someone else
            if rotation.user(k + step) != current:
                candidates.append(rotation.handoff(k + step))
                break
    for window in layer.restrictions:
        edge = next_window_edge(window, tz, instant)
        if edge is not None:
            candidates.append(edge)
    later = [c for c in candidates if c > instant]
    return min(later) if later else None


# -- the schedule --------------------------------------------------------------------------------


def who_is_on_call(schedule: Schedule, at: dt.datetime) -> OnCall:
    """Who is on call at ``at``: the last override covering it, else the last layer covering it."""
    at = aware(at)
    for override in reversed(schedule.overrides):
        if override.covers(at):
            return OnCall(override.user, override=override)
    tz = schedule.tz
    for layer in reversed(schedule.layers):
        user = layer_user_at(layer, tz, at)
        if user is not None:
            return OnCall(user, layer=layer)
    return OnCall(None)


def _next_boundary(schedule: Schedule, instant: dt.datetime) -> dt.datetime | None:
    tz = schedule.tz
    candidates = [_layer_next_change(layer, tz, instant) for layer in schedule.layers]
    for override in schedule.overrides:
        candidates += [override.start, override.end]
    later = [c for c in candidates if c is not None and c > instant]
    return min(later) if later else None


def next_handoffs(schedule: Schedule, after: dt.datetime, count: int,
                  horizon: dt.timedelta = HORIZON) -> list[Handoff]:
    """The next ``count`` changes of the on-call person after ``after`` (a change to no one
    included), looking at most ``horizon`` ahead."""
    instant = aware(after)
    limit = instant + horizon
    current = who_is_on_call(schedule, instant)
    out: list[Handoff] = []
    while len(out) < count:
        boundary = _next_boundary(schedule, instant)
        if boundary is None or boundary > limit:
            break
        instant = boundary
        now = who_is_on_call(schedule, instant)
        if now.user != current.user:
            out.append(Handoff(instant, now))
        current = now
    return out


def on_call_until(schedule: Schedule, at: dt.datetime, horizon: dt.timedelta = HORIZON) -> dt.datetime | None:
    """When the person on call at ``at`` hands off (None: not within ``horizon``)."""
    changes = next_handoffs(schedule, at, 1, horizon)
    return changes[0].at if changes else None


# -- text forms (the API, the database and ``hotline sync`` share them) ---------------------------

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class FormatError(ValueError):
    """A value in the wrong form; ``where`` names it (e.g. ``[0].startTime``)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def parse_time_of_day(text: Any, where: str = "") -> dt.time:
    """``"09:00"`` or ``"09:00:30"`` (24-hour clock) to a time."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise FormatError(where, f"{text!r} is not a time of day like 09:00 (24-hour HH:MM)")
    return dt.time(int(match[1]), int(match[2]), int(match[3] or 0))


def format_time_of_day(value: dt.time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def parse_day(text: Any, where: str = "") -> int:
    """``"Monday"`` (any case, or its first three letters) to 0."""
    if isinstance(text, str):
        key = text.strip().lower()
        for index, name in enumerate(DAY_NAMES):
            if key in (name.lower(), name[:3].lower()):
                return index
    raise FormatError(where, f"{text!r} is not a day of the week ({', '.join(DAY_NAMES)})")


def parse_restrictions(value: Any) -> tuple[Window, ...]:
    """The stored/API form of a layer's restriction windows, checked and parsed. The form:

    ``[{"type": "Daily", "startTime": "09:00", "endTime": "17:00", "days": ["Monday", ...]},
    {"type": "Weekly", "startDay": "Monday", "startTime": "09:00", "endDay": "Friday", "endTime": "17:00"}]``
    (``days`` is optional). ``None`` or ``[]``: no restriction.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FormatError("", "must be a list of windows (or null for none)")
    if len(value) > 100:
        raise FormatError("", "at most 100 windows")
    windows: list[Window] = []
    for i, item in enumerate(value):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise FormatError(where, 'must be an object like {"type": "Daily", "startTime": "09:00", '
                                     '"endTime": "17:00"}')
        kind = item.get("type")
        allowed = {"Daily": {"type", "startTime", "endTime", "days"},
                   "Weekly": {"type", "startDay", "startTime", "endDay", "endTime"}}
        if kind not in allowed:
            raise FormatError(f"{where}.type", f"must be Daily or Weekly, not {kind!r}")
        unknown = sorted(set(item) - allowed[kind])
        if unknown:
            raise FormatError(where, f"unknown key {unknown[0]!r} for a {kind} window "
                                     f"(keys: {', '.join(sorted(allowed[kind]))})")
        for key in sorted(allowed[kind] - {"type", "days"}):
            if key not in item:
                raise FormatError(where, f"missing {key}")
        start = parse_time_of_day(item["startTime"], f"{where}.startTime")
        end = parse_time_of_day(item["endTime"], f"{where}.endTime")
        if kind == "Daily":
            days = ALL_DAYS
            if item.get("days") is not None:
                raw_days = item["days"]
                if not isinstance(raw_days, list) or not raw_days:
                    raise FormatError(f"{where}.days", "must be a non-empty list of days of the week")
                days = frozenset(parse_day(d, f"{where}.days[{j}]") for j, d in enumerate(raw_days))
            windows.append(DailyWindow(start, end, days))
        else:
            windows.append(WeeklyWindow(parse_day(item["startDay"], f"{where}.startDay"), start,
                                        parse_day(item["endDay"], f"{where}.endDay"), end))
    return tuple(windows)


def restrictions_to_json(windows: tuple[Window, ...]) -> list[dict]:
    """The canonical stored form of ``windows`` (what ``parse_restrictions`` reads)."""
    out = []
    for window in windows:
        if isinstance(window, DailyWindow):
            item = {"type": "Daily", "startTime": format_time_of_day(window.start),
                    "endTime": format_time_of_day(window.end)}
            if window.days != ALL_DAYS:
                item["days"] = [DAY_NAMES[d] for d in sorted(window.days)]
        else:
            item = {"type": "Weekly", "startDay": DAY_NAMES[window.start_day],
                    "startTime": format_time_of_day(window.start), "endDay": DAY_NAMES[window.end_day],
                    "endTime": format_time_of_day(window.end)}
        out.append(item)
    return out
