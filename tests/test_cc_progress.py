"""What the call services write about contact-center calls (ivr/store/cc_progress.py), on SQLite and
PostgreSQL: a queued call is taken once and claimed for its node; a stale one is failed, not placed;
a call a stopped controller left is closed and its agent freed."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from ivr.store import cc_progress
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.contact_center import OUTBOUND_CALL, agent_is_busy
from ivr.store.db import open_database


def queue(age_seconds: float = 0.0) -> m.ContactCenterCall:
    project = m.Project.create(name="cc progress")
    agent = m.User.create(project=project, name="Ada", isAgent=True)
    created = m.utcnow() - dt.timedelta(seconds=age_seconds)
    call = m.ContactCenterCall.create(project=project, callType="Voice Outbound (API)", status="assigned",
                                      agentId=agent.id, endUserNumber="+18596579625", outboundNumber="+13392195276",
                                      createdAt=created)
    for kind, address in (("agent", "sip:ada@10.0.0.5"), ("end_user", "+18596579625")):
        m.ContactCenterParticipant.create(project=project, call=call, type=kind, address=address,
                                          userId=agent.id if kind == "agent" else None)
    outbox.put(OUTBOUND_CALL, {"call": str(call.id)})
    return call


async def take_all(db, node: str) -> list:
    """Everything queued (the session's database holds other tests' calls too: take until none is left).

    Until the outbox is empty, not until a batch comes back empty: other tests' calls are stale when
    the suite has run for more than STALE_AFTER, and a batch of only stale calls places none."""
    taken = []
    for _ in range(10_000):
        if not await db.run(outbox.pending, OUTBOUND_CALL):
            return taken
        taken += await db.run(cc_progress.take_outbound_calls, node)
    raise AssertionError("the outbox of outbound calls never emptied")


@pytest.fixture
async def db(database_url):
    database = open_database(database_url, pool_size=2)
    try:
        yield database
    finally:
        await database.close_pool()


async def test_a_queued_call_is_taken_once_and_claimed_for_its_node(db):
    call = await db.run(queue)
    taken = await take_all(db, "node-a")
    mine = [t for t in taken if t.call_id == str(call.id)]
    assert len(mine) == 1 and mine[0].agent_address == "sip:ada@10.0.0.5"
    assert mine[0].end_user_address == "+18596579625" and mine[0].outbound_number == "+13392195276"
    again = await take_all(db, "node-b")
    assert all(t.call_id != str(call.id) for t in again)
    assert str(call.id) in await db.run(cc_progress.open_calls, "node-a")
    assert str(call.id) not in await db.run(cc_progress.open_calls, "node-b")


async def test_a_call_taken_long_after_its_creation_is_failed_not_placed(db):
    call = await db.run(queue, cc_progress.STALE_AFTER + 60)
    taken = await take_all(db, "node-a")
    assert all(t.call_id != str(call.id) for t in taken)
    row = await db.run(lambda: m.ContactCenterCall.get_by_id(call.id))
    assert (row.status, row.failReason) == ("failed", "system_error") and "not placed" in row.failDetails
    assert not await db.run(agent_is_busy, call.agentId)


async def test_closing_a_lost_call_frees_its_agent(db):
    call = await db.run(queue)
    await take_all(db, "node-a")
    assert await db.run(agent_is_busy, call.agentId)
    await db.run(cc_progress.close_lost, str(call.id), "gone", time.time())
    row = await db.run(lambda: m.ContactCenterCall.get_by_id(call.id))
    assert (row.status, row.failReason, row.failDetails) == ("failed", "lost", "gone")
    parties = await db.run(lambda: [p.status for p in m.ContactCenterParticipant.select().where(
        m.ContactCenterParticipant.call == call.id)])
    assert parties == ["failed", "failed"] and not await db.run(agent_is_busy, call.agentId)
