"""Scheduled calls of the calls API fire once, at their time (ivr/store/scheduled.py, and the call
services' loop ivr/shells/scheduler.py); an inbound call of the API gets its one inbound message when
it is created; a callback that finishes recovers its failed parent (ivr/store/cc_progress.py). On
SQLite and PostgreSQL; tests/test_scheduler_processes.py fires calls from two real processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
import uuid

import pytest

from ivr.config import Config
from ivr.core.contact_center.outbound import UpdateCall
from ivr.core.contact_center.vocabulary import CallStatus, CallType, RecordingPermission
from ivr.shells.scheduler import ScheduledCallsService
from ivr.store import cc_progress, scheduled
from ivr.store import models as m
from ivr.store.contact_center import INBOUND_CALL, OUTBOUND_CALL, CallPlan, create_call
from ivr.store.db import migrate, open_database


@pytest.fixture
async def db(database_url):
    database = open_database(database_url, pool_size=2)
    try:
        yield database
    finally:
        await database.close_pool()


def new_project() -> m.Project:
    return m.Project.create(name=f"scheduled {uuid.uuid4().hex[:8]}")


def scheduled_call(project: m.Project, at: dt.datetime, **fields) -> m.ContactCenterCall:
    now = m.utcnow()
    return m.ContactCenterCall.create(project=project, callType=CallType.SCHEDULED.value,
                                      status=fields.pop("status", CallStatus.SCHEDULED.value), scheduledAt=at,
                                      endUserNumber="+18596579625", createdAt=now, updatedAt=now, **fields)


def messages(call_id: uuid.UUID, kind: str = INBOUND_CALL) -> int:
    return sum(1 for msg in m.OutboxMessage.select().where(m.OutboxMessage.kind == kind)
               if msg.payload.get("call") == str(call_id))


def row(call_id: uuid.UUID) -> m.ContactCenterCall:
    return m.ContactCenterCall.get_by_id(call_id)


async def fire_all(db, now=None) -> list[scheduled.FiredCall]:
    """Everything due (the session's database holds other tests' calls too: fire until none is left)."""
    fired = []
    while batch := await db.run(scheduled.fire_due, now, 50):
        fired += batch
    return fired


# -- the store --------------------------------------------------------------------------------------------


async def test_due_calls_fire_once_and_future_ones_wait(db):
    now = m.utcnow()

    def world():
        project = new_project()
        due = [scheduled_call(project, now - dt.timedelta(seconds=s)) for s in (0.5, 3, 3600)]
        future = scheduled_call(project, now + dt.timedelta(minutes=5))
        finished = scheduled_call(project, now - dt.timedelta(seconds=1), status=CallStatus.FINISHED.value)
        return due, future, finished

    due, future, finished = await db.run(world)
    fired = await fire_all(db, now)
    mine = {f.call_id: f for f in fired if f.project_id == due[0].projectId}
    assert set(mine) == {c.id for c in due}
    assert mine[due[2].id].late_seconds == pytest.approx(3600, abs=0.01)  # overdue by an hour: still fires
    assert mine[due[0].id].number == due[0].numericId and mine[due[0].id].fired_at == now
    for call in due:
        got = await db.run(row, call.id)
        assert (got.status, got.queuedAt) == ("queued", now)
        assert await db.run(messages, call.id) == 1
        assert await db.run(messages, call.id, OUTBOUND_CALL) == 0
    for call, status in ((future, "scheduled"), (finished, "finished")):
        assert (await db.run(row, call.id)).status == status and await db.run(messages, call.id) == 0
    # Again: nothing new fires, and no second message.
    again = await fire_all(db, now + dt.timedelta(seconds=1))
    assert not {f.call_id for f in again} & ({c.id for c in due} | {future.id, finished.id})
    for call in due:
        assert await db.run(messages, call.id) == 1
    # Its time come, the future call fires (with the time of the transaction when none is given).
    await db.run(lambda: m.ContactCenterCall.update(scheduledAt=m.utcnow() - dt.timedelta(seconds=2))
                 .where(m.ContactCenterCall.id == future.id).execute())
    later = [f for f in await fire_all(db) if f.call_id == future.id]
    assert len(later) == 1 and 2 <= later[0].late_seconds < 10
    assert (await db.run(row, future.id)).status == "queued" and await db.run(messages, future.id) == 1


async def test_a_call_no_longer_scheduled_is_not_fired(db):
    """A call that left ``scheduled`` before its time (failed, cancelled) is neither fired nor given a
    message. (Two schedulers racing for one call: tests/test_scheduler_processes.py.)"""
    now = m.utcnow()

    def world():
        project = new_project()
        return scheduled_call(project, now - dt.timedelta(seconds=1))

    call = await db.run(world)
    await db.run(lambda: m.ContactCenterCall.update(status=CallStatus.FAILED.value)
                 .where(m.ContactCenterCall.id == call.id).execute())
    assert all(f.call_id != call.id for f in await fire_all(db, now))
    assert (await db.run(row, call.id)).status == "failed" and await db.run(messages, call.id) == 0


async def test_a_batch_is_limited_and_the_next_due_time_is_known(db):
    now = m.utcnow()
    project = await db.run(new_project)
    await fire_all(db, now)  # other tests' calls out of the way
    calls = await db.run(lambda: [scheduled_call(project, now - dt.timedelta(seconds=10 - i)) for i in range(5)])
    assert await db.run(scheduled.next_due_at) == calls[0].scheduledAt
    first = await db.run(scheduled.fire_due, now, 3)
    assert [f.call_id for f in first] == [c.id for c in calls[:3]]  # oldest first
    rest = await db.run(scheduled.fire_due, now, 3)
    assert [f.call_id for f in rest] == [c.id for c in calls[3:]]


async def test_an_inbound_call_of_the_api_gets_one_inbound_message_a_scheduled_one_none(db):
    def world():
        project = new_project()
        menu = m.CallMenu.create(project=project, name="Support")
        plans = [CallPlan(project.id, call_type, "en", "+18596579625", RecordingPermission.NOT_ASKED,
                          create_end_user=True, menu_id=menu.id,
                          scheduled_at=m.utcnow() + dt.timedelta(hours=1) if call_type is CallType.SCHEDULED
                          else None)
                 for call_type in (CallType.INBOUND, CallType.SCHEDULED)]
        return [create_call(plan, 0) for plan in plans]

    inbound, later = await db.run(world)
    assert (await db.run(row, inbound)).status == "queued"
    assert await db.run(messages, inbound) == 1 and await db.run(messages, inbound, OUTBOUND_CALL) == 0
    assert (await db.run(row, later)).status == "scheduled" and await db.run(messages, later) == 0


# -- recovered: a callback that finishes ------------------------------------------------------------------


async def test_a_finished_callback_recovers_its_failed_parent(db):
    def world():
        project = new_project()
        now = m.utcnow()
        parent = scheduled_call(project, now, status=CallStatus.FAILED.value)
        other = scheduled_call(project, now, status=CallStatus.FINISHED.value)
        children = [scheduled_call(project, now, status=CallStatus.CONNECTED.value, parentCallId=p.id)
                    for p in (parent, other, parent)]
        return parent, other, children

    parent, other, (child, child_of_finished, failing) = await db.run(world)
    # A callback that fails recovers nothing.
    await db.run(cc_progress.update_call, str(failing.id), UpdateCall(status=CallStatus.FAILED))
    assert (await db.run(row, parent.id)).status == "failed"
    # A status other than finished recovers nothing either.
    await db.run(cc_progress.update_call, str(child.id), UpdateCall(talk_seconds=3.0))
    assert (await db.run(row, parent.id)).status == "failed"
    await db.run(cc_progress.update_call, str(child.id),
                 UpdateCall(status=CallStatus.FINISHED, ended_at=time.time(), talk_seconds=12.0))
    got = await db.run(row, child.id)
    assert (got.status, got.callDuration) == ("finished", 12)
    assert (await db.run(row, parent.id)).status == "recovered"
    # A parent that did not fail keeps its status.
    await db.run(cc_progress.update_call, str(child_of_finished.id), UpdateCall(status=CallStatus.FINISHED))
    assert (await db.run(row, other.id)).status == "finished"


async def test_a_connected_callback_closed_by_a_restart_recovers_its_parent(db):
    def world():
        project = new_project()
        now = m.utcnow()
        parent = scheduled_call(project, now, status=CallStatus.FAILED.value)
        child = scheduled_call(project, now, status=CallStatus.CONNECTED.value, parentCallId=parent.id,
                               connectedAt=now)
        return parent, child

    parent, child = await db.run(world)
    await db.run(cc_progress.close_lost, str(child.id), "gone", time.time())
    assert (await db.run(row, child.id)).status == "finished"
    assert (await db.run(row, parent.id)).status == "recovered"


# -- the call services' loop ------------------------------------------------------------------------------


async def wait_until(predicate, timeout: float = 10.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def test_the_service_fires_calls_overdue_at_its_start_and_says_how_late(db, caplog):
    caplog.set_level(logging.INFO, logger="ivr.shells.scheduler")

    def world():
        project = new_project()
        now = m.utcnow()
        return (scheduled_call(project, now - dt.timedelta(hours=2)),
                scheduled_call(project, now + dt.timedelta(seconds=0.6)))

    overdue, soon = await db.run(world)
    service = ScheduledCallsService(Config({}), db, poll=0.1)
    await service.start()
    try:
        async def queued(call):
            return (await db.run(row, call.id)).status == "queued"
        await wait_until(lambda: queued(overdue), what="the overdue call firing")
        await wait_until(lambda: queued(soon), what="the call due in 0.6 s firing")
        got = await db.run(row, soon.id)
        assert 0 <= (got.queuedAt - got.scheduledAt).total_seconds() < 1.0
        assert await db.run(messages, overdue.id) == 1 and await db.run(messages, soon.id) == 1
    finally:
        await service.close()
    text = caplog.text
    assert f"scheduled call {overdue.numericId} fired 72" in text and "were not running" in text
    assert f"scheduled call {soon.numericId} fired 0." in text


async def test_a_failed_poll_is_logged_and_retried(tmp_path, caplog):
    """A real failure (the calls' table is missing for a moment): logged, and the loop goes on."""
    caplog.set_level(logging.INFO, logger="ivr.shells.scheduler")
    path = tmp_path / "hotline.db"
    db = open_database(f"sqlite:///{path}", pool_size=2)
    await migrate(db)
    service = ScheduledCallsService(Config({}), db, poll=0.05)
    service.retry_after = 0.1
    try:
        call = await db.run(lambda: scheduled_call(new_project(), m.utcnow() - dt.timedelta(seconds=1)))
        with sqlite3.connect(path) as raw:
            raw.execute("ALTER TABLE contact_center_call RENAME TO contact_center_call_away")
        await service.start()

        async def failed_twice():
            return caplog.text.count("could not fire the due calls") >= 2
        await wait_until(failed_twice, what="two failed polls")
        with sqlite3.connect(path) as raw:
            raw.execute("ALTER TABLE contact_center_call_away RENAME TO contact_center_call")

        async def queued():
            return (await db.run(row, call.id)).status == "queued"
        await wait_until(queued, what="the call firing once the table is back")
        assert await db.run(messages, call.id) == 1
    finally:
        await service.close()
        await db.close_pool()
    assert "no such table" in caplog.text
