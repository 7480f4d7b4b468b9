"""Who is on call: properties of the schedule arithmetic (hypothesis), and worked examples.

The properties are checked against references written here from the documented semantics
(ivr/core/oncall.py's docstring), in several time zones with and without daylight saving: zones that
change at 02:00, at midnight (Havana), by 30 minutes (Lord Howe), in the southern hemisphere
(Sydney, Santiago, Chatham), and none at all (Kolkata, UTC).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ivr.core.oncall import (
    DailyWindow,
    FormatError,
    Layer,
    Override,
    RotationInterval,
    Schedule,
    WeeklyWindow,
    instant_to_local,
    layer_shifts,
    layer_user_at,
    local_to_instant,
    next_handoffs,
    on_call_until,
    parse_restrictions,
    restrictions_to_json,
    time_zone,
    who_is_on_call,
)

UTC = dt.timezone.utc
DST_ZONES = ["America/New_York", "Europe/London", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe",
             "America/Santiago", "Pacific/Chatham", "America/Havana", "America/Sao_Paulo"]
FIXED_ZONES = ["UTC", "Asia/Kolkata", "Asia/Tokyo"]
ZONES = DST_ZONES + FIXED_ZONES
PROPS = settings(max_examples=80, deadline=None)

# -- strategies ---------------------------------------------------------------------------------

instants = st.datetimes(min_value=dt.datetime(2005, 1, 1), max_value=dt.datetime(2035, 1, 1),
                        timezones=st.just(UTC))
# Hand-off times that often fall in the hours clocks skip or repeat.
times = st.one_of(st.sampled_from([dt.time(0), dt.time(0, 30), dt.time(1, 30), dt.time(2), dt.time(2, 30),
                                   dt.time(3), dt.time(9), dt.time(23, 30)]),
                  st.times().map(lambda t: t.replace(microsecond=0)))
users = st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5, unique=True).map(tuple)


@st.composite
def layers(draw, restrictions=False, interval=None):
    chosen = draw(st.sampled_from(list(RotationInterval))) if interval is None else interval
    count = draw(st.integers(1, {RotationInterval.HOUR: 30, RotationInterval.DAY: 10,
                                 RotationInterval.WEEK: 3}[chosen]))
    windows = draw(st.lists(daily_windows() | weekly_windows(), max_size=3)) if restrictions else []
    return Layer(draw(users), draw(instants), chosen, count, draw(st.none() | times), tuple(windows))


def daily_windows():
    days = st.frozensets(st.integers(0, 6), min_size=1)
    return st.builds(DailyWindow, times, times, days)


def weekly_windows():
    return st.builds(WeeklyWindow, st.integers(0, 6), times, st.integers(0, 6), times)


def quiet(tz, instant, hours=4) -> bool:
    """No clock change within ``hours`` of ``instant`` (where wall-clock references are exact)."""
    offset = instant.astimezone(tz).utcoffset()
    return all((instant + dt.timedelta(hours=h)).astimezone(tz).utcoffset() == offset
               for h in range(-hours, hours + 1))


# -- local time <-> instants ----------------------------------------------------------------------


@PROPS
@given(zone=st.sampled_from(ZONES), a=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1)),
       b=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1)))
def test_local_to_instant_never_goes_backwards_and_round_trips(zone, a, b):
    tz = time_zone(zone)
    a, b = sorted((a, b))
    assert local_to_instant(a, tz) <= local_to_instant(b, tz)
    instant = local_to_instant(a, tz)
    local = instant_to_local(instant, tz)
    if local != a:  # only a nonexistent time moves: to the first local time after the gap
        assert local > a and instant_to_local(instant - dt.timedelta(seconds=1), tz) < a


def test_nonexistent_and_ambiguous_local_times():
    ny = time_zone("America/New_York")
    # 2024-03-10: 02:00 EST -> 03:00 EDT. 02:30 does not exist: the instant the clocks jump.
    assert local_to_instant(dt.datetime(2024, 3, 10, 2, 30), ny) == dt.datetime(2024, 3, 10, 7, tzinfo=UTC)
    # 2024-11-03: 02:00 EDT -> 01:00 EST. 01:30 happens twice: the first one.
    assert local_to_instant(dt.datetime(2024, 11, 3, 1, 30), ny) == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    lord_howe = time_zone("Australia/Lord_Howe")  # 2024-10-06: 02:00 -> 02:30 (a half-hour change)
    assert instant_to_local(local_to_instant(dt.datetime(2024, 10, 6, 2, 10), lord_howe), lord_howe) == \
        dt.datetime(2024, 10, 6, 2, 30)


# -- one layer ----------------------------------------------------------------------------------------


@PROPS
@given(layer=layers(), zone=st.sampled_from(ZONES), offset=st.integers(0, 3 * 365 * 24 * 60))
def test_every_covered_moment_maps_to_exactly_one_user_of_the_layer(layer, zone, offset):
    tz = time_zone(zone)
    at = layer.start + dt.timedelta(minutes=offset)
    user = layer_user_at(layer, tz, at)
    assert user in layer.users
    # ... the user of the one shift that contains it: the shifts around it tile the time exactly.
    since, until = at - 3 * layer.length, at + 3 * layer.length
    shifts = list(layer_shifts(layer, tz, since, until))
    assert shifts[0].start == max(since, layer.start) and shifts[-1].end == until
    assert all(x.end == y.start for x, y in zip(shifts, shifts[1:]))
    assert [s.user for s in shifts if s.start <= at < s.end] == [user]
    assert layer_user_at(layer, tz, layer.start - dt.timedelta(microseconds=1)) is None


@PROPS
@given(layer=layers(), zone=st.sampled_from(ZONES), cycles=st.integers(1, 3))
def test_rotations_are_fair_over_whole_cycles(layer, zone, cycles):
    """Over whole cycles each user has the same number of shifts, each exactly one rotation of wall-clock
    time; in zones without clock changes, exactly the same elapsed time too."""
    tz = time_zone(zone)
    start_local = instant_to_local(layer.start, tz)
    assume(local_to_instant(start_local, tz) == layer.start)  # not in the second pass of a repeated hour
    layer = Layer(layer.users, layer.start, layer.interval, layer.count, start_local.time())  # no partial shift
    n = len(layer.users)
    anchor = start_local
    boundaries = [local_to_instant(anchor + layer.length * k, tz) for k in range(n * cycles + 1)]
    shifts = list(layer_shifts(layer, tz, boundaries[0], boundaries[-1]))
    assert all(s.start in boundaries for s in shifts)
    # A shift wholly inside a skipped hour takes no time: it is left out, and only then.
    skipped = sum(1 for x, y in zip(boundaries, boundaries[1:]) if x == y)
    assert len(shifts) == n * cycles - skipped
    if skipped == 0:
        assert Counter(s.user for s in shifts) == {u: cycles for u in layer.users}
    if zone in FIXED_ZONES:
        elapsed = Counter()
        for s in shifts:
            elapsed[s.user] += (s.end - s.start).total_seconds()
        assert set(elapsed.values()) == {cycles * layer.length.total_seconds()}


@PROPS
@given(zone=st.sampled_from(DST_ZONES), start=instants, handoff=times, count=st.integers(1, 3),
       interval=st.sampled_from([RotationInterval.DAY, RotationInterval.WEEK]))
def test_handoffs_land_at_the_configured_local_time_across_dst(zone, start, handoff, count, interval):
    tz = time_zone(zone)
    layer = Layer(("a", "b"), start, interval, count, handoff)
    schedule = Schedule(zone, (layer,))
    step = count * (7 if interval is RotationInterval.WEEK else 1)
    wanted_count = 400 // step  # a year and more: both clock changes, whatever the start
    changes = next_handoffs(schedule, start, wanted_count, horizon=dt.timedelta(days=410))
    assert len(changes) == wanted_count
    dates = []
    for change in changes:
        local = instant_to_local(change.at, tz)
        wanted = dt.datetime.combine(local.date(), handoff)
        if local != wanted:
            # The hand-off time did not exist that day: the hand-off is when the clocks jumped over it.
            wanted = max(w for w in (wanted, wanted - dt.timedelta(days=1)) if w < local)
            assert local - wanted < dt.timedelta(hours=3)
            assert instant_to_local(change.at - dt.timedelta(seconds=1), tz) < wanted
        else:  # an ambiguous hand-off time is its first occurrence
            assert change.at == local_to_instant(wanted, tz)
        dates.append(wanted.date())
    assert all((y - x).days == step for x, y in zip(dates, dates[1:]))
    assert [c.on_call.user for c in changes] == ["ab"[(i + 1) % 2] for i in range(len(changes))]


@PROPS
@given(layer=layers(restrictions=True), zone=st.sampled_from(ZONES), offset=st.integers(0, 2 * 365 * 24 * 60))
def test_restriction_windows_leave_gaps_where_they_should(layer, zone, offset):
    assume(layer.restrictions)
    tz = time_zone(zone)
    at = layer.start + dt.timedelta(minutes=offset)
    assume(quiet(tz, at, hours=3))  # the reference below reads plain wall-clock time
    local = instant_to_local(at, tz)
    inside = any(_reference_inside(window, local) for window in layer.restrictions)
    user = layer_user_at(layer, tz, at)
    unrestricted = Layer(layer.users, layer.start, layer.interval, layer.count, layer.handoff)
    assert user == (layer_user_at(unrestricted, tz, at) if inside else None)


def _reference_inside(window, local: dt.datetime) -> bool:
    def micros(t: dt.time) -> int:
        return ((t.hour * 60 + t.minute) * 60 + t.second) * 10**6 + t.microsecond

    day = 86400 * 10**6
    now = micros(local.time())
    start, end = micros(window.start), micros(window.end)
    if isinstance(window, DailyWindow):
        today, yesterday = local.weekday(), (local.weekday() - 1) % 7
        if end > start:
            return today in window.days and start <= now < end
        # wraps past midnight (or a whole day when end == start): opened today, or yesterday
        return (today in window.days and now >= start) or (yesterday in window.days and now < end)
    now += local.weekday() * day
    start += window.start_day * day
    end += window.end_day * day
    if end > start:
        return start <= now < end
    return now >= start or now < end


# -- layers and overrides --------------------------------------------------------------------------------


@st.composite
def schedules(draw):
    zone = draw(st.sampled_from(ZONES))
    stack = draw(st.lists(layers(restrictions=True), min_size=1, max_size=3))
    overrides = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(instants)
        overrides.append(Override(draw(st.sampled_from("xyz")), start,
                                  start + dt.timedelta(minutes=draw(st.integers(1, 14 * 24 * 60)))))
    return Schedule(zone, tuple(stack), tuple(overrides))


@PROPS
@given(schedule=schedules(), at=instants)
def test_later_layers_win_and_overrides_always_win(schedule, at):
    tz = schedule.tz
    covering = [o for o in schedule.overrides if o.start <= at < o.end]
    answer = who_is_on_call(schedule, at)
    if covering:
        assert answer.user == covering[-1].user and answer.override is covering[-1]
        return
    by_layer = [layer_user_at(layer, tz, at) for layer in schedule.layers]
    expected = next((u for u in reversed(by_layer) if u is not None), None)
    assert answer.user == expected


@PROPS
@given(schedule=schedules(), at=instants, data=st.data())
def test_overrides_win_inside_and_leave_no_trace_outside(schedule, at, data):
    assume(schedule.overrides)
    override = data.draw(st.sampled_from(schedule.overrides))
    span = (override.end - override.start) // dt.timedelta(microseconds=1)
    inside = override.start + dt.timedelta(microseconds=int(span * data.draw(st.floats(0, 0.999))))
    last = [o for o in schedule.overrides if o.covers(inside)][-1]
    assert who_is_on_call(schedule, inside).user == last.user
    if not any(o.covers(at) for o in schedule.overrides):
        plain = Schedule(schedule.time_zone, schedule.layers)
        assert who_is_on_call(schedule, at) == who_is_on_call(plain, at)


@settings(max_examples=40, deadline=None)
@given(schedule=schedules(), data=st.data())
def test_next_handoffs_are_every_change_and_only_changes(schedule, data):
    start = min(layer.start for layer in schedule.layers) + dt.timedelta(minutes=data.draw(st.integers(0, 10**5)))
    changes = next_handoffs(schedule, start, 8, horizon=dt.timedelta(days=60))
    previous_at, previous = start, who_is_on_call(schedule, start).user
    for change in changes:
        assert change.at > previous_at and change.on_call.user != previous
        assert who_is_on_call(schedule, change.at) == change.on_call
        # Nothing changes in between (sampled): the person on call is the one of the last change.
        for fraction in data.draw(st.lists(st.floats(0, 1, exclude_max=True), max_size=3)):
            span = (change.at - previous_at) // dt.timedelta(microseconds=1)
            between = previous_at + dt.timedelta(microseconds=int(span * fraction))
            assert who_is_on_call(schedule, between).user == previous
        previous_at, previous = change.at, change.on_call.user
    assert on_call_until(schedule, start, dt.timedelta(days=60)) == (changes[0].at if changes else None)


# -- worked examples ----------------------------------------------------------------------------------------


def at(zone: str, text: str) -> dt.datetime:
    """A local time of ``zone`` as an instant."""
    return local_to_instant(dt.datetime.fromisoformat(text), time_zone(zone))


def test_follow_the_sun_weekly_across_three_time_zones():
    """Sydney, London and San Francisco each cover their own working day, with a weekly rotation inside
    each office. The schedule's clock is UTC (an office's hours move an hour in UTC when its own clocks
    change; the windows cover the 24 hours in all seasons)."""
    monday = dt.datetime(2024, 1, 1, tzinfo=UTC)
    apac = Layer(("sydney-ann", "sydney-bo"), monday, "Week", 1, dt.time(0),
                 (DailyWindow(dt.time(22), dt.time(6)),), name="APAC")        # 09:00-17:00 Sydney (AEDT)
    emea = Layer(("london-cy", "london-di"), monday, "Week", 1, dt.time(0),
                 (DailyWindow(dt.time(6), dt.time(14)),), name="EMEA")        # 06:00-14:00 London (GMT)
    amer = Layer(("sf-ed", "sf-flo"), monday, "Week", 1, dt.time(0),
                 (DailyWindow(dt.time(14), dt.time(22)),), name="AMER")       # 06:00-14:00 San Francisco
    schedule = Schedule("UTC", (apac, emea, amer))

    def who(zone, local):
        return who_is_on_call(schedule, at(zone, local)).user

    assert who("Australia/Sydney", "2024-01-03T10:00") == "sydney-ann"     # Wednesday morning in Sydney
    assert who("Europe/London", "2024-01-03T10:00") == "london-cy"
    assert who("America/Los_Angeles", "2024-01-03T10:00") == "sf-ed"
    assert who("Australia/Sydney", "2024-01-10T10:00") == "sydney-bo"      # the next week: the others
    assert who("Europe/London", "2024-01-10T10:00") == "london-di"
    assert who("America/Los_Angeles", "2024-01-10T10:00") == "sf-flo"
    # Always someone, and the sun hands over three times a day.
    day = dt.datetime(2024, 1, 3, tzinfo=UTC)
    assert all(who_is_on_call(schedule, day + dt.timedelta(minutes=m)).user for m in range(0, 7 * 1440, 17))
    changes = next_handoffs(schedule, day, 6)
    assert [(c.at.hour, c.on_call.layer.name) for c in changes] == [
        (6, "EMEA"), (14, "AMER"), (22, "APAC"), (6, "EMEA"), (14, "AMER"), (22, "APAC")]


def test_weekday_business_hours_layer_over_a_24x7_layer():
    zone = "Europe/Berlin"
    always = Layer(("ops-1", "ops-2", "ops-3"), at(zone, "2024-03-04T09:00"), "Week", 1, dt.time(9),
                   name="24x7")
    office = Layer(("dev-1", "dev-2"), at(zone, "2024-03-04T09:00"), "Day", 1, dt.time(9),
                   (DailyWindow(dt.time(9), dt.time(17), frozenset(range(5))),), name="business hours")
    schedule = Schedule(zone, (always, office))

    def who(local):
        return who_is_on_call(schedule, at(zone, local)).user

    assert who("2024-03-05T10:00") == "dev-2"      # Tuesday: the office layer, its second day
    assert who("2024-03-05T16:59") == "dev-2"
    assert who("2024-03-05T17:00") == "ops-1"      # after hours: the 24x7 layer shows through
    assert who("2024-03-06T08:59") == "ops-1"
    assert who("2024-03-06T09:00") == "dev-1"
    assert who("2024-03-09T11:00") == "ops-1"      # Saturday: no business hours
    assert who("2024-03-11T10:00") == "dev-2"      # next Monday: the daily rotation went on over the weekend
    assert who("2024-03-11T08:00") == "ops-1"      # ...before the weekly hand-off at 09:00
    assert who("2024-03-11T18:00") == "ops-2"
    # Across the change to summer time (2024-03-31): still 09:00 to 17:00 on the wall clock.
    assert who("2024-04-02T08:59") == "ops-2" and who("2024-04-02T09:00") in ("dev-1", "dev-2")
    assert at(zone, "2024-04-02T09:00").hour == 7  # UTC+2 now
    changes = next_handoffs(schedule, at(zone, "2024-03-08T12:00"), 3)
    assert [(instant_to_local(c.at, time_zone(zone)).isoformat(), c.on_call.user) for c in changes] == [
        ("2024-03-08T17:00:00", "ops-1"), ("2024-03-11T09:00:00", "dev-2"), ("2024-03-11T17:00:00", "ops-2")]


def test_one_day_override():
    zone = "America/New_York"
    weekly = Layer(("alice", "bob"), at(zone, "2024-03-04T09:00"), "Week", 1, dt.time(9))
    sick_day = Override("carol", at(zone, "2024-03-06T00:00"), at(zone, "2024-03-07T00:00"))
    schedule = Schedule(zone, (weekly,), (sick_day,))
    assert who_is_on_call(schedule, at(zone, "2024-03-05T23:59")).user == "alice"
    answer = who_is_on_call(schedule, at(zone, "2024-03-06T12:00"))
    assert answer.user == "carol" and answer.override is sick_day
    assert who_is_on_call(schedule, at(zone, "2024-03-07T00:00")).user == "alice"
    changes = next_handoffs(schedule, at(zone, "2024-03-05T12:00"), 3)
    assert [(c.at, c.on_call.user) for c in changes] == [
        (at(zone, "2024-03-06T00:00"), "carol"), (at(zone, "2024-03-07T00:00"), "alice"),
        (at(zone, "2024-03-11T09:00"), "bob")]
    # The hand-off on the Monday after the change to summer time is still at 09:00 (13:00 UTC, not 14:00).
    assert changes[-1].at == dt.datetime(2024, 3, 11, 13, tzinfo=UTC)


def test_daily_handoff_in_the_skipped_and_the_repeated_hour():
    zone = "America/New_York"
    tz = time_zone(zone)
    layer = Layer(("a", "b"), at(zone, "2024-03-08T02:30"), "Day", 1, dt.time(2, 30))
    spring = next_handoffs(Schedule(zone, (layer,)), at(zone, "2024-03-09T12:00"), 2)
    # 2024-03-10 02:30 does not exist: the hand-off is at 03:00 EDT, when the clocks jump.
    assert instant_to_local(spring[0].at, tz) == dt.datetime(2024, 3, 10, 3, 0)
    assert instant_to_local(spring[1].at, tz) == dt.datetime(2024, 3, 11, 2, 30)
    layer = Layer(("a", "b"), at(zone, "2024-11-01T01:30"), "Day", 1, dt.time(1, 30))
    schedule = Schedule(zone, (layer,))
    handoff = next_handoffs(schedule, at(zone, "2024-11-02T12:00"), 1)[0]
    # 2024-11-03 01:30 happens twice: the hand-off is the first one, and does not come back an hour later.
    assert handoff.at == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert who_is_on_call(schedule, handoff.at + dt.timedelta(hours=1)).user == handoff.on_call.user
    assert next_handoffs(schedule, handoff.at, 1)[0].at == at(zone, "2024-11-04T01:30")


def test_hourly_shifts_keep_their_local_hours_and_skip_a_vanished_shift():
    zone = "Europe/London"  # 2024-03-31: 01:00 GMT -> 02:00 BST
    layer = Layer(("a", "b", "c"), at(zone, "2024-03-30T00:00"), "Hour", 1)
    tz = time_zone(zone)
    shifts = list(layer_shifts(layer, tz, at(zone, "2024-03-31T00:00"), at(zone, "2024-03-31T04:00")))
    # The 01:00-02:00 shift never happens (that hour does not exist); the next user takes 02:00 as usual.
    assert [(instant_to_local(s.start, tz).hour, s.user) for s in shifts] == [(0, "a"), (2, "c"), (3, "a")]
    eight = Layer(("x", "y", "z"), at(zone, "2024-03-29T10:00"), "Hour", 8, dt.time(6))
    changes = next_handoffs(Schedule(zone, (eight,)), at(zone, "2024-03-30T12:00"), 6)
    assert [instant_to_local(c.at, tz).hour for c in changes] == [14, 22, 6, 14, 22, 6]


def test_layer_without_users_or_before_its_start_covers_no_one():
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    base = Layer(("a",), start, "Week")
    empty = Layer((), start, "Week")
    schedule = Schedule("UTC", (base, empty))
    assert who_is_on_call(schedule, start + dt.timedelta(days=3)).user == "a"
    assert who_is_on_call(schedule, start - dt.timedelta(days=3)).user is None
    assert next_handoffs(schedule, start - dt.timedelta(days=3), 5) == [
        next_handoffs(schedule, start - dt.timedelta(days=3), 1)[0]]  # one change: to "a", then never again
    assert on_call_until(schedule, start + dt.timedelta(days=3)) is None


# -- text forms -----------------------------------------------------------------------------------------------


def test_restrictions_round_trip_through_their_stored_form():
    stored = [{"type": "Daily", "startTime": "09:00", "endTime": "17:00", "days": ["Monday", "Friday"]},
              {"type": "Weekly", "startDay": "Friday", "startTime": "18:00", "endDay": "Monday",
               "endTime": "08:00:30"},
              {"type": "Daily", "startTime": "22:00", "endTime": "06:00"}]
    windows = parse_restrictions(stored)
    assert windows[0] == DailyWindow(dt.time(9), dt.time(17), frozenset({0, 4}))
    assert restrictions_to_json(windows) == stored
    assert parse_restrictions([{"type": "Daily", "startTime": "9:00", "endTime": "17:00",
                                "days": ["mon", "TUESDAY"]}])[0].days == frozenset({0, 1})


@pytest.mark.parametrize(("value", "message"), [
    ("09:00", "must be a list"),
    ([1], "[0]: must be an object"),
    ([{"type": "Hourly"}], "[0].type: must be Daily or Weekly"),
    ([{"type": "Daily", "startTime": "09:00"}], "[0]: missing endTime"),
    ([{"type": "Daily", "startTime": "25:00", "endTime": "10:00"}], "[0].startTime: '25:00' is not a time"),
    ([{"type": "Daily", "startTime": "09:00", "endTime": "10:00", "days": []}], "[0].days: must be a non-empty"),
    ([{"type": "Daily", "startTime": "09:00", "endTime": "10:00", "days": ["Someday"]}], "[0].days[0]: 'Someday'"),
    ([{"type": "Weekly", "startDay": "Monday", "startTime": "09:00", "endDay": "Friday", "endTime": "17:00",
       "days": ["Monday"]}], "[0]: unknown key 'days'"),
])
def test_bad_restrictions_say_where_and_what(value, message):
    with pytest.raises(FormatError) as info:
        parse_restrictions(value)
    assert str(info.value).startswith(message)
