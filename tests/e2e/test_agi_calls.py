"""Incoming calls run by the FastAGI shell: the controller's scenarios, unchanged, against the dialplan
path (no ARI application is connected, so the lab's dialplan falls back to FastAGI), the scenarios where
the dialplan shell behaves differently (and says so in its logs), and what the FastAGI port survives."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ivr.store import models as m
from ivr.shells.fastagi import CUT_OFF_MESSAGE, LOST_MESSAGE, STOPPED_MESSAGE
from tests.e2e import test_calls as ari
from tests.e2e.conftest import running_hotline
from tests.e2e.dialplan_hotline import DialplanHotline
from tests.e2e.hotline import Target
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e


@pytest.fixture
async def hotline(lab, hotline_config):
    """Hotline's FastAGI shell (with AMI, without the ARI controller) for one test."""
    async with running_hotline(DialplanHotline, hotline_config) as running:
        yield running


# -- the controller's scenarios, as they are -----------------------------------------------------

test_first_rule_answers_and_presses_1 = ari.test_first_rule_answers_and_presses_1
test_first_rule_never_answers_second_accepts = ari.test_first_rule_never_answers_second_accepts
test_voicemail_like_leg_is_not_an_answer = ari.test_voicemail_like_leg_is_not_an_answer
test_busy_leg_escalates_at_once = ari.test_busy_leg_escalates_at_once
test_repeat_then_no_answer = ari.test_repeat_then_no_answer
test_nobody_available = ari.test_nobody_available
test_disabled_policy = ari.test_disabled_policy
test_outside_business_hours_the_caller_hears_the_message_and_nobody_rings = \
    ari.test_outside_business_hours_the_caller_hears_the_message_and_nobody_rings
test_a_blocked_caller_hears_the_message_and_nobody_rings = ari.test_a_blocked_caller_hears_the_message_and_nobody_rings
test_an_anonymous_caller_is_refused_by_an_allow_list = ari.test_an_anonymous_caller_is_refused_by_an_allow_list
test_an_allowed_caller_in_business_hours_is_connected_as_usual = \
    ari.test_an_allowed_caller_in_business_hours_is_connected_as_usual
test_unknown_number_is_not_in_service = ari.test_unknown_number_is_not_in_service
test_caller_hangs_up_while_legs_ring = ari.test_caller_hangs_up_while_legs_ring
test_ten_simultaneous_calls_to_one_policy = ari.test_ten_simultaneous_calls_to_one_policy
if hasattr(ari, "test_schedule_rings_whoever_is_on_call_now"):
    test_schedule_rings_whoever_is_on_call_now = ari.test_schedule_rings_whoever_is_on_call_now


async def test_the_calls_ran_over_fastagi(hotline, sip_target):
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        scenario = await hotline.policy(Target([phone]))
        caller = Caller(scenario.number, sip_target, hangup_after=4)
        await caller.start()
        log = await hotline.final_log(scenario)
    assert log.status == "Completed" and log.callProviderCallId.startswith("agi:")
    assert hotline.metrics.calls.labels("Completed")._value.get() >= 1


# -- where the dialplan shell differs (and its logs say so) --------------------------------------


async def test_a_policy_that_takes_voicemail_hangs_up_after_the_no_answer_message_over_fastagi(hotline, sip_target):
    """FastAGI records no voicemail (docs/oncall.md): the caller is told, then hung up on, as before."""
    phone = Phone.never_answer()
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=1), voicemailOnNoAnswer=True)
        caller = Caller(scenario.number, sip_target, hangup_after=20)
        await caller.start()
        log = await hotline.final_log(scenario, timeout=20)
        caller_result = await caller.wait(10)
    assert log.status == "NoAnswer" and log.statusMessage == "No one answered: all 1 escalation rule was tried 1 time"
    assert log.voicemailFile is None and log.callDurationInSeconds == 0
    assert caller_result.hung_up_by == "remote"


async def test_team_first_to_answer_takes_the_call_and_the_others_stop_ringing(hotline, sip_target):
    """ARI lets everyone ring until someone presses 1; Dial gives the call to the first leg that answers."""
    fast = Phone.answer_and_press("1", delay=0.5)
    slow = Phone.answer_and_press("1", delay=0.5, ring=1.5)
    away = Phone.never_answer()
    async with fast, slow, away:
        scenario = await hotline.policy(Target([fast, slow, away], team=True, escalate_after=10))
        caller = Caller(scenario.number, sip_target, hangup_after=3)
        await caller.start()
        log = await hotline.final_log(scenario)
        results = {phone.port: await phone.wait(5) for phone in (slow, away)}
    items = {item.userId: item for item in await hotline.items_of(log)}
    assert len(items) == 3
    starts = sorted(item.startedAt for item in items.values())
    assert (starts[-1] - starts[0]).total_seconds() < 0.5  # all at once: one Dial
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(fast).id
    assert items[scenario.user_of(fast).id].status == "Completed"
    for loser in (slow, away):
        item = items[scenario.user_of(loser).id]
        assert (item.status, item.isAnswered, item.statusMessage) == ("NoAnswer", False, CUT_OFF_MESSAGE)
        # Cut off when the fast one answered, before it pressed 1 half a second later.
        assert (item.endedAt - items[scenario.user_of(fast).id].startedAt).total_seconds() < 0.45
        assert results[loser.port].canceled and not results[loser.port].answered


async def test_a_leg_that_answers_then_fails_to_confirm_escalates_at_once(hotline, sip_target):
    voicemail = Phone.answer_silent()
    ringing = Phone.answer_and_press("1", delay=0.5, ring=1.0)
    backup = Phone.answer_and_press("1", delay=0.5)
    async with voicemail, ringing, backup:
        scenario = await hotline.policy(Target([voicemail, ringing], team=True, escalate_after=10),
                                        Target([backup], escalate_after=5))
        caller = Caller(scenario.number, sip_target, hangup_after=5)
        await caller.start()
        log = await hotline.final_log(scenario)
    items = {item.userId: item for item in await hotline.items_of(log)}
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(backup).id
    assert "did not press 1 within 3 s" in items[scenario.user_of(voicemail).id].statusMessage
    assert items[scenario.user_of(ringing).id].statusMessage == CUT_OFF_MESSAGE
    # The rule had 10 s, but once its only answering leg failed no one was left: rule 2 at once.
    wait = (items[scenario.user_of(backup).id].startedAt - items[scenario.user_of(voicemail).id].startedAt)
    assert wait.total_seconds() < 4.5


async def test_the_on_call_user_hangs_up_first(hotline, sip_target):
    phone = Phone.answer_and_press("1", delay=0.5, hold=2)
    async with phone:
        scenario = await hotline.policy(Target([phone]))
        caller = Caller(scenario.number, sip_target, hangup_after=15)
        await caller.start()
        log = await hotline.final_log(scenario)
        result = await caller.wait(10)
    assert (log.status, log.statusMessage) == ("Completed", "Call completed; the on-call user hung up")
    assert result.hung_up_by == "remote"  # Hotline hung up on the caller


async def test_caller_hangs_up_while_a_leg_hears_the_confirmation(hotline, sip_target):
    """Seen at once thanks to AMI's HangupRequest, although Dial is busy with the leg's subroutine."""
    phone = Phone.answer_silent()
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=10))
        caller = Caller(scenario.number, sip_target, hangup_after=1)
        await caller.start()
        log = await hotline.final_log(scenario)
        phone_result = await phone.wait(5)
    [item] = await hotline.items_of(log)
    assert log.status == "CallerHungUp" and item.status == "CallerHungUp"
    assert (item.endedAt - item.startedAt).total_seconds() < 2.5   # not the 3 s confirmation window
    assert phone_result.hung_up_by == "remote"


async def test_hotline_stopping_mid_call_closes_the_log_and_the_dialplan_takes_over(lab, hotline_config, sip_target):
    from ivr.store.db import open_database

    db = open_database(hotline_config.database_url, pool_size=4)
    first = DialplanHotline(hotline_config, db)
    phone = Phone.never_answer()
    try:
        await first.start()
        async with phone:
            scenario = await first.policy(Target([phone], escalate_after=2))
            caller = Caller(scenario.number, sip_target)
            await caller.start()
            await first.log_status(scenario, "Ringing")
            await first.stop()                          # FastAGI sessions end with the process
            [log] = await first.logs_of(scenario)
            assert (log.status, log.statusMessage) == ("Failed", STOPPED_MESSAGE)
            # Without Hotline's word that it finished, the dialplan gives the caller its last resort.
            result = await caller.wait(20)
            assert result.answered and result.hung_up_by == "remote"
        # A log a crashed process left open is closed when the FastAGI server starts again; the
        # log of another Asterisk (another systemname) sharing the database is not its business.
        def stale_log(channel: str) -> m.IncomingCallLog:
            return m.IncomingCallLog.create(project=scenario.policy.projectId, status="Ringing",
                                            incomingCallPolicyId=scenario.policy.id, callProviderCallId=channel)

        stale = await db.run(stale_log, f"agi:hotline-{lab.instance}-1795400000.{uuid.uuid4().int % 999}")
        elsewhere = await db.run(stale_log, f"agi:other-pbx-1795400000.{uuid.uuid4().int % 999}")
        second = DialplanHotline(hotline_config, db)
        await second.start()
        try:
            deadline = time.monotonic() + 5
            while (stale := await db.run(m.IncomingCallLog.get_by_id, stale.id)).status == "Ringing":
                assert time.monotonic() < deadline, "the stale FastAGI log was not closed"
                await asyncio.sleep(0.1)
        finally:
            await second.stop()
        assert (stale.status, stale.statusMessage) == ("Failed", LOST_MESSAGE)
        assert (await db.run(m.IncomingCallLog.get_by_id, elsewhere.id)).status == "Ringing"
    finally:
        await first.stop()
        await db.close_pool()


# -- the FastAGI port ------------------------------------------------------------------------------


async def test_port_scans_and_garbage_during_a_call_change_nothing(hotline, sip_target, lab_config):
    """Connections that close at once, garbage, half requests and silence on the FastAGI port while a
    call is being escalated: the call goes on and the event loop stays responsive."""
    silent, person = Phone.never_answer(), Phone.answer_and_press("1", delay=0.5)
    port = lab_config.agi.port
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker():
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    async def abuse():
        for i in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 3 == 1:
                writer.write(b"\x16\x03\x01garbage\xff\n\n")
            elif i % 3 == 2:
                writer.write(b"agi_network: yes\nagi_network_script: incoming-call-pol")
            writer.close()
            if i % 20 == 0:
                await asyncio.sleep(0.02)

    async with silent, person:
        scenario = await hotline.policy(Target([silent], escalate_after=2), Target([person], escalate_after=5))
        rejected_before = hotline.agi_server.rejected
        tick = asyncio.create_task(ticker())
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]  # say nothing at all
        caller = Caller(scenario.number, sip_target, hangup_after=5)
        await caller.start()
        await hotline.log_status(scenario, "Ringing")
        started = time.process_time()
        await abuse()
        log = await hotline.final_log(scenario)
        cpu = time.process_time() - started
        stop.set()
        await tick
        for _, writer in idle:
            writer.close()
    first, second = await hotline.items_of(log)
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(person).id
    assert (first.status, second.status) == ("NoAnswer", "Completed")
    assert abs((second.startedAt - first.startedAt).total_seconds() - 2.0) <= 0.5
    assert hotline.agi_server.rejected - rejected_before >= 300
    assert max(lags) < 0.25, max(lags)
    assert cpu < 3.0, cpu
    # And the port still serves calls.
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        again = await hotline.policy(Target([phone]))
        await Caller(again.number, sip_target, hangup_after=4).start()
        assert (await hotline.final_log(again)).status == "Completed"
