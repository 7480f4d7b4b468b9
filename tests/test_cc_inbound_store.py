"""What the call services read and write for calls into the menus (ivr/store/cc_inbound.py), on SQLite
and PostgreSQL: a dialed number's menu tree, a queue's available agents, the place in the queue,
offer events appended, call-backs only to numbers that may be called."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from ivr.core.contact_center.updates import UpdateCall
from ivr.core.contact_center.vocabulary import MenuState
from ivr.store import cc_inbound, cc_progress
from ivr.store import models as m
from ivr.store.db import open_database
from tests.api.factories import unique_phone


@pytest.fixture
async def db(database_url):
    database = open_database(database_url, pool_size=2)
    try:
        yield database
    finally:
        await database.close_pool()


def tree():
    project = m.Project.create(name="cc inbound")
    root = m.CallMenu.create(project=project, name="Main", routingPhoneNumber=unique_phone(), outputMessage="Hi.",
                             state="after_hours")
    sales = m.CallMenu.create(project=project, name="Sales", parent=root, position=0)
    m.CallMenu.create(project=project, name="Secret", parent=root, position=1, hidden=True)
    m.CallMenu.create(project=project, name="Support", parent=root, position=2)
    ready = m.User.create(project=project, name="Ready", isAgent=True)
    away = m.User.create(project=project, name="Away", isAgent=True, agentAvailability="Unavailable")
    no_number = m.User.create(project=project, name="No number", isAgent=True)
    for user in (ready, away):
        m.UserIncomingCallNumber.create(project=project, user=user, sipUri=f"sip:{user.name.lower()}@10.0.0.9",
                                        isVerified=True)
    for user, group in ((ready, 2), (away, 1), (no_number, 1)):
        m.CallMenuAgent.create(project=project, callMenu=sales, user=user, groupNumber=group)
    return project, root, sales, ready


async def test_a_call_to_a_root_menu_opens_with_its_tree_and_its_caller_as_end_user(db):
    project, root, sales, _ = await db.run(tree)
    opened = await db.run(cc_inbound.open_inbound, root.routingPhoneNumber, "+14155550123", "US", "node-a",
                          "chan-1", 5.0)
    walk = opened.walk
    menu = walk.menus[str(root.id)]
    assert menu.keys == ("1", "3") and [walk.menus[c].name for c in menu.children] == ["Sales", "Support"]
    assert menu.state is MenuState.AFTER_HOURS
    assert opened.can_call_back and opened.caller_number == "+14155550123"
    call = await db.run(m.ContactCenterCall.get_by_id, uuid.UUID(opened.call_id))
    assert (call.status, call.callType, call.channelPrefix) == ("selecting", "Voice Inbound (IVR)", "node-a")
    assert await db.run(cc_inbound.open_inbound, unique_phone(), "+14155550123", "US", "n", "c", 5.0) is None


async def test_a_queue_offers_only_available_agents_with_a_number(db):
    project, root, sales, ready = await db.run(tree)
    opened = await db.run(cc_inbound.open_inbound, root.routingPhoneNumber, "", "US", "node-a", "chan-2", 5.0)
    assert not opened.can_call_back      # no caller ID: never called back
    setup = await db.run(lambda: cc_inbound.queue_setup(opened.call_id, str(sales.id), "", ring_seconds=3,
                                                        confirm_seconds=2, announce_every=0, max_call_seconds=60))
    assert [(a.user_id, a.group) for a in setup.agents] == [(str(ready.id), 2)]


async def test_the_place_in_the_queue_and_offer_events(db):
    project, root, sales, _ = await db.run(tree)
    calls = []
    for second in range(3):
        opened = await db.run(cc_inbound.open_inbound, root.routingPhoneNumber, "+14155550100", "US", "n",
                              f"c{second}", 5.0)
        await db.run(cc_progress.update_call, opened.call_id,
                     UpdateCall(status="queued", menu_id=str(sales.id), queued_at=1_800_000_000.0 + second))
        calls.append(opened.call_id)
    positions = [await db.run(cc_inbound.queue_position, c, str(sales.id)) for c in calls]
    assert positions == [1, 2, 3]
    for group in (1, 2):
        await db.run(cc_progress.update_call, calls[0], UpdateCall(offer_group=group, offer_at=1_800_000_010.0))
    row = await db.run(m.ContactCenterCall.get_by_id, uuid.UUID(calls[0]))
    assert [e["group"] for e in row.offerEvents] == ["Group 1", "Group 2"]
    assert row.offerEvents[0]["casting_time"] == "2027-01-15T08:00:10.000Z"


async def test_a_call_back_goes_only_to_a_number_that_may_be_called(db):
    project, root, sales, _ = await db.run(tree)
    fine = await db.run(cc_inbound.open_inbound, root.routingPhoneNumber, "+14155550123", "US", "n", "c", 5.0)
    child = await db.run(cc_inbound.schedule_callback, fine.call_id, str(sales.id), 600)
    row = await db.run(lambda: m.ContactCenterCall.get(m.ContactCenterCall.numericId == child))
    assert (row.status, row.callType, str(row.parentCallId)) == ("scheduled", "Voice Scheduled (API)", fine.call_id)
    assert dt.timedelta(seconds=590) < row.scheduledAt - row.createdAt < dt.timedelta(seconds=610)
    premium = await db.run(cc_inbound.open_inbound, root.routingPhoneNumber, "+19005550123", "US", "n", "c", 5.0)
    assert not premium.can_call_back
    assert await db.run(cc_inbound.schedule_callback, premium.call_id, str(sales.id), 600) is None
