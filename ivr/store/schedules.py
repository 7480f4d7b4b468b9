"""On-call schedules from the database into ``ivr.core.oncall``'s plain data, and the answers back.

Plain synchronous peewee functions (run through the database bridge from async code), used by the
call controller (``callstore.resolve_rule``), the API (``.../on-call``) and the CLI
(``hotline oncall``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from ivr.store import models as m
from ivr.core import oncall
from ivr.store.db import on_reader


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def layer_from_row(row: m.OnCallDutyPolicyScheduleLayer, users: list[str]) -> oncall.Layer:
    return oncall.Layer(
        users=tuple(users),
        start=_aware(row.startsAt),
        interval=oncall.RotationInterval(row.rotationInterval),
        count=row.rotationIntervalCount,
        handoff=oncall.parse_time_of_day(row.handOffTime) if row.handOffTime else None,
        restrictions=oncall.parse_restrictions(row.restrictionTimes or []),
        id=str(row.id),
        name=row.name or f"Layer {row.order}",
    )


def load_schedule(schedule_id, project_id=None, *, overrides_ending_after: dt.datetime | None = None
                  ) -> oncall.Schedule | None:
    """The schedule ``schedule_id`` (in ``project_id`` when given), or None. Overrides that ended
    before ``overrides_ending_after`` are left out (they cannot matter from then on)."""
    S, L, LU, O = (m.OnCallDutyPolicySchedule, m.OnCallDutyPolicyScheduleLayer,
                   m.OnCallDutyPolicyScheduleLayerUser, m.OnCallDutyPolicyScheduleOverride)
    query = S.select().where(S.id == schedule_id)
    if project_id is not None:
        query = query.where(S.project == project_id)
    schedule = on_reader(query).first()
    if schedule is None:
        return None
    layer_rows = list(on_reader(L.select().where(L.onCallDutyPolicySchedule == schedule.id)
                                .order_by(L.order, L.createdAt)))
    members: dict[uuid.UUID, list[str]] = {row.id: [] for row in layer_rows}
    if layer_rows:
        for layer_id, user_id in on_reader(LU.select(LU.onCallDutyPolicyScheduleLayer, LU.user)
                                           .where(LU.onCallDutyPolicyScheduleLayer.in_(list(members)))
                                           .order_by(LU.order, LU.createdAt).tuples()):
            members[layer_id].append(str(user_id))
    overrides = O.select().where(O.onCallDutyPolicySchedule == schedule.id)
    if overrides_ending_after is not None:
        overrides = overrides.where(O.endsAt > oncall.aware(overrides_ending_after).replace(tzinfo=None))
    return oncall.Schedule(
        time_zone=schedule.timeZone,
        layers=tuple(layer_from_row(row, members[row.id]) for row in layer_rows),
        overrides=tuple(oncall.Override(str(o.userId), _aware(o.startsAt), _aware(o.endsAt), id=str(o.id),
                                        name=o.description or "")
                        for o in on_reader(overrides.order_by(O.createdAt, O.id))),
        id=str(schedule.id),
        name=schedule.name,
    )


@dataclass(frozen=True)
class Report:
    """Who is on call at ``at``, until when, and the next hand-offs."""

    schedule: oncall.Schedule
    at: dt.datetime
    on_call: oncall.OnCall
    until: dt.datetime | None
    handoffs: list[oncall.Handoff]
    users: dict[str, m.User]  # the users named above, by id


def report(schedule: oncall.Schedule, project_id, at: dt.datetime, next_count: int = 0) -> Report:
    at = oncall.aware(at)
    on_call = oncall.who_is_on_call(schedule, at)
    changes = oncall.next_handoffs(schedule, at, max(1, next_count))
    until = changes[0].at if changes else None
    handoffs = changes[:next_count]
    ids = {uid for uid in [on_call.user, *(h.on_call.user for h in handoffs)] if uid is not None}
    users = ({str(u.id): u for u in on_reader(m.User.select().where(m.User.id.in_(list(ids)),
                                                                    m.User.project == project_id))}
             if ids else {})
    return Report(schedule, at, on_call, until, handoffs, users)


def on_call_user_ids(schedule_id, project_id, at: dt.datetime) -> list[uuid.UUID]:
    """The users on call on the schedule at ``at`` (none, or one)."""
    schedule = load_schedule(schedule_id, project_id, overrides_ending_after=at)
    if schedule is None:
        return []
    user = oncall.who_is_on_call(schedule, at).user
    return [uuid.UUID(user)] if user is not None else []
