"""Incoming calls through the real Asterisk: policies executed by the ARI controller, and the logs they leave."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from zoneinfo import ZoneInfo

import pytest

from ivr.asterisk.ari import AriError
from tests.e2e.hotline import Target
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e


async def test_first_rule_answers_and_presses_1(hotline, sip_target):
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        scenario = await hotline.policy(Target([phone]))
        caller = Caller(scenario.number, sip_target, caller_id="+14155550123", hangup_after=2)
        await caller.start()
        caller_result = await caller.wait(20)
        log = await hotline.final_log(scenario)
    assert caller_result.answered, caller_result.describe()
    items = await hotline.items_of(log)
    assert log.status == "Completed", log.statusMessage
    assert log.answeredByUserId == scenario.user_of(phone).id
    assert log.callerPhoneNumber == "+14155550123" and log.routingPhoneNumber == scenario.number
    assert log.startedAt and log.endedAt and log.callDurationInSeconds is not None
    assert 1 <= log.callDurationInSeconds <= 3
    assert [(i.status, i.isAnswered) for i in items] == [("Completed", True)]
    assert items[0].numberDialed == phone.uri()


async def test_first_rule_never_answers_second_accepts(hotline, sip_target, caplog):
    silent, good = Phone.never_answer(), Phone.answer_and_press("1", delay=0.5)
    async with silent, good:
        scenario = await hotline.policy(Target([silent], escalate_after=2), Target([good], escalate_after=5))
        caller = Caller(scenario.number, sip_target, hangup_after=6)
        await caller.start()
        escalated = await hotline.log_status(scenario, "Escalated", timeout=10)
        assert escalated.currentEscalationRuleOrder == 2
        log = await hotline.final_log(scenario)
    first, second = await hotline.items_of(log)
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(good).id
    assert (first.status, first.isAnswered, first.escalationRuleOrder) == ("NoAnswer", False, 1)
    assert first.statusMessage == "Not answered within 2 s"
    assert (second.status, second.isAnswered, second.escalationRuleOrder) == ("Completed", True, 2)
    # The escalation happens when the first rule's time is up, not a moment later.
    waited = (second.startedAt - first.startedAt).total_seconds()
    assert abs(waited - 2.0) <= 0.5, waited
    assert (await silent.wait(5)).canceled
    registry = hotline.controller.metrics.registry
    assert registry.get_sample_value("hotline_escalation_latency_seconds_count") == 1
    assert registry.get_sample_value("hotline_escalation_latency_seconds_sum") < 0.5
    # The ringback's end is the shell's own business: no warning about an event the engine never expected.
    assert not [r.getMessage() for r in caplog.records if "impossible event" in r.getMessage()]


async def test_voicemail_like_leg_is_not_an_answer(hotline, sip_target):
    voicemail, person = Phone.answer_silent(), Phone.answer_and_press("1", delay=0.5)
    async with voicemail, person:
        # The voicemail box answers at once; its 3 s to press 1 end before the rule's 6 s.
        scenario = await hotline.policy(Target([voicemail], escalate_after=6), Target([person], escalate_after=6))
        caller = Caller(scenario.number, sip_target, hangup_after=6)
        await caller.start()
        log = await hotline.final_log(scenario)
    first, second = await hotline.items_of(log)
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(person).id
    assert (first.status, first.isAnswered) == ("NoAnswer", False)
    assert "did not press 1" in first.statusMessage and "voicemail" in first.statusMessage
    assert (second.status, second.isAnswered) == ("Completed", True)
    # Once the only leg of rule 1 is out, rule 2 rings at once (3 s window, not the rule's 6 s).
    assert (second.startedAt - first.startedAt).total_seconds() < 4.5
    assert (await voicemail.wait(5)).hung_up_by == "remote"  # Hotline hung up on the voicemail box


async def test_busy_leg_escalates_at_once(hotline, sip_target):
    busy, good = Phone.busy(), Phone.answer_and_press("1", delay=0.5)
    async with busy, good:
        scenario = await hotline.policy(Target([busy], escalate_after=10), Target([good], escalate_after=5))
        caller = Caller(scenario.number, sip_target, hangup_after=5)
        await caller.start()
        log = await hotline.final_log(scenario)
    first, second = await hotline.items_of(log)
    assert (first.status, first.statusMessage) == ("Busy", "Line busy")
    assert (second.startedAt - first.startedAt).total_seconds() < 2  # not the rule's 10 s
    assert log.status == "Completed" and second.status == "Completed"


async def test_team_rings_everyone_at_once_and_the_first_to_accept_wins(hotline, sip_target):
    fast = Phone.answer_and_press("1", delay=0.5)
    slow = Phone.answer_and_press("1", delay=2.5)
    away = Phone.never_answer()
    async with fast, slow, away:
        scenario = await hotline.policy(Target([fast, slow, away], team=True, escalate_after=10))
        caller = Caller(scenario.number, sip_target, hangup_after=4)
        await caller.start()
        log = await hotline.final_log(scenario)
    items = await hotline.items_of(log)
    by_user = {item.userId: item for item in items}
    assert len(items) == 3 and len(by_user) == 3
    starts = sorted(item.startedAt for item in items)
    assert (starts[-1] - starts[0]).total_seconds() < 0.5  # all at once
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(fast).id
    assert by_user[scenario.user_of(fast).id].status == "Completed"
    for loser in (slow, away):
        item = by_user[scenario.user_of(loser).id]
        assert item.status == "NoAnswer" and not item.isAnswered
        assert "answered elsewhere" in item.statusMessage
    assert (await away.wait(5)).canceled


async def test_schedule_rings_whoever_is_on_call_now(hotline, sip_target):
    on_call, off_duty = Phone.answer_and_press("1", delay=0.5), Phone.answer_and_press("1", delay=0.5)
    async with on_call, off_duty:
        scenario = await hotline.policy(Target([on_call, off_duty], schedule=True, escalate_after=5))
        caller = Caller(scenario.number, sip_target, hangup_after=4)
        await caller.start()
        log = await hotline.final_log(scenario)
        off_duty_result = await off_duty.stop()
    items = await hotline.items_of(log)
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(on_call).id
    assert [(i.userId, i.status) for i in items] == [(scenario.user_of(on_call).id, "Completed")]
    assert not off_duty_result.received_call


async def test_repeat_then_no_answer(hotline, sip_target):
    phone = Phone.never_answer(calls=3)
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=1), repeat=2)
        caller = Caller(scenario.number, sip_target)
        await caller.start()
        log = await hotline.final_log(scenario, timeout=25)
        caller_result = await caller.wait(10)
    items = await hotline.items_of(log)
    assert log.status == "NoAnswer" and log.repeatCount == 2
    assert "tried 3 times" in log.statusMessage
    assert [item.status for item in items] == ["NoAnswer"] * 3
    assert log.callDurationInSeconds == 0 and log.endedAt is not None
    assert caller_result.hung_up_by == "remote"  # told, then hung up on: never left in silence


async def test_nobody_available(hotline, sip_target):
    scenario = await hotline.policy(Target([]))  # a rule whose user has no verified number
    caller = Caller(scenario.number, sip_target)
    await caller.start()
    log = await hotline.final_log(scenario)
    assert (log.status, log.statusMessage) == ("Failed", "No on-call user available in any escalation rule")
    assert await hotline.items_of(log) == []
    result = await caller.wait(10)
    assert result.answered and result.hung_up_by == "remote"


async def test_disabled_policy(hotline, sip_target):
    phone = Phone.answer_and_press("1")
    async with phone:
        scenario = await hotline.policy(Target([phone]), enabled=False)
        caller = Caller(scenario.number, sip_target)
        await caller.start()
        log = await hotline.final_log(scenario)
        result = await caller.wait(10)
    assert (log.status, log.statusMessage) == ("Failed", "Policy is disabled")
    assert await hotline.items_of(log) == []
    assert not (await phone.stop()).received_call
    assert result.hung_up_by == "remote"


# -- business hours and caller lists: refused calls ring nobody ----------------------------------


def hours_around_now(zone: str, open_: bool) -> list[dict]:
    """A daily window of ``zone`` that contains this moment (open) or starts in 2 hours (closed)."""
    now = dt.datetime.now(ZoneInfo(zone))
    start = now - dt.timedelta(hours=1) if open_ else now + dt.timedelta(hours=2)
    return [{"type": "Daily", "startTime": f"{start:%H:%M}", "endTime": f"{start + dt.timedelta(hours=3):%H:%M}"}]


async def refused_call(hotline, sip_target, caller_id: str, **policy_fields):
    """A call to a policy whose phone would answer at once: the caller's result, the log, the phone's."""
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=2), **policy_fields)
        caller = Caller(scenario.number, sip_target, caller_id=caller_id)
        await caller.start()
        log = await hotline.final_log(scenario)
        result = await caller.wait(10)
        phone_result = await phone.stop()
    assert await hotline.items_of(log) == []
    assert not phone_result.received_call, "the phone got an INVITE"
    assert result.answered and result.hung_up_by == "remote"  # told, then hung up on
    return log, result


async def test_outside_business_hours_the_caller_hears_the_message_and_nobody_rings(hotline, sip_target):
    log, result = await refused_call(hotline, sip_target, "+14155550123", businessHoursTimeZone="Europe/Paris",
                                     businessHours=hours_around_now("Europe/Paris", open_=False),
                                     afterHoursMessage="We are closed. Please call again during business hours.")
    assert log.status == "Failed", log.statusMessage
    assert log.statusMessage.startswith("Outside business hours (Europe/Paris, ")
    assert log.statusMessage.endswith("local time): the after-hours message was played")
    assert result.call.talk_time >= 1.5  # the whole message was heard before the hang-up
    assert log.callDurationInSeconds == 0 and log.endedAt


async def test_a_blocked_caller_hears_the_message_and_nobody_rings(hotline, sip_target):
    log, result = await refused_call(hotline, sip_target, "+14155550123", callerBlockList=["+1415*"],
                                     blockedCallerMessage="This number cannot take your call.")
    assert (log.status, log.statusMessage) == ("Failed", "Blocked caller +14155550123: matches +1415* of the "
                                                         "callerBlockList: the blocked-caller message was played")
    assert log.callerPhoneNumber == "+14155550123"
    assert result.call.talk_time >= 1.0


async def test_an_anonymous_caller_is_refused_by_an_allow_list(hotline, sip_target):
    log, _ = await refused_call(hotline, sip_target, "anonymous", callerAllowList=["+14155550123"])
    # Over ARI the caller ID reads "anonymous"; the dialplan hands FastAGI none at all.
    who = "anonymous (not a phone number)" if log.callerPhoneNumber else "with no caller ID"
    assert (log.status, log.statusMessage) == ("Failed", f"Blocked caller {who}: an unknown caller matches no entry "
                                                         "of the callerAllowList: the blocked-caller message was played")


async def test_an_allowed_caller_in_business_hours_is_connected_as_usual(hotline, sip_target):
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=3), businessHoursTimeZone="Asia/Tokyo",
                                        businessHours=hours_around_now("Asia/Tokyo", open_=True),
                                        callerAllowList=["+1415*"], callerBlockList=["+14155550199"])
        caller = Caller(scenario.number, sip_target, caller_id="+14155550123", hangup_after=4)
        await caller.start()
        log = await hotline.final_log(scenario)
        result = await caller.wait(10)
    assert result.answered and log.status == "Completed", log.statusMessage
    assert log.answeredByUserId == scenario.user_of(phone).id
    assert [(i.status, i.isAnswered) for i in await hotline.items_of(log)] == [("Completed", True)]


async def test_unknown_number_is_not_in_service(hotline, sip_target, caplog):
    caller = Caller("+12125550199", sip_target)
    await caller.start()
    result = await caller.wait(15)
    assert result.answered and result.hung_up_by == "remote"
    assert any("no Incoming Call Policy has this routing number" in r.getMessage() for r in caplog.records)


async def test_caller_hangs_up_while_legs_ring(hotline, sip_target):
    first, second = Phone.never_answer(), Phone.never_answer()
    async with first, second:
        scenario = await hotline.policy(Target([first, second], team=True, escalate_after=10))
        caller = Caller(scenario.number, sip_target, hangup_after=1.5)
        await caller.start()
        log = await hotline.final_log(scenario)
        results = [await first.wait(5), await second.wait(5)]
    items = await hotline.items_of(log)
    assert log.status == "CallerHungUp" and log.callDurationInSeconds == 0 and log.endedAt
    assert [item.status for item in items] == ["CallerHungUp", "CallerHungUp"]
    assert all(r.canceled for r in results)  # every leg was hung up


async def test_ten_simultaneous_calls_to_one_policy(hotline, sip_target):
    phone = Phone.answer_and_press("1", delay=0.5, calls=10)
    async with phone:
        scenario = await hotline.policy(Target([phone], escalate_after=8))
        callers = Caller(scenario.number, sip_target, hangup_after=2, calls=10, concurrency=10, rate=50)
        await callers.start()
        logs = await hotline.final_log(scenario, count=10, timeout=30)
        result = await callers.wait(20)
    assert len(logs) == 10 and result.successful == 10, result.describe()
    assert [log.status for log in logs] == ["Completed"] * 10
    for log in logs:
        items = await hotline.items_of(log)
        assert [(i.status, i.isAnswered) for i in items] == [("Completed", True)]


# -- restarts and faults -------------------------------------------------------------------


def free_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ControllerProcess:
    """`hotline serve --controller-only` as its own process, to be killed like a crashing server."""

    def __init__(self, config, tmp_path):
        import yaml

        self.config_file = tmp_path / "hotline.yaml"
        self.config_file.write_text(yaml.safe_dump(config.as_dict(reveal_secrets=True)))
        self.log_file = tmp_path / "controller.log"
        self.proc = None

    async def start(self, hotline_db_url) -> None:
        import os
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_") and k != "DATABASE_URL"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr.main", "--config", str(self.config_file), "serve", "--controller-only",
            env={**env, "HOTLINE_API_PORT": str(free_tcp_port())}, stdout=open(self.log_file, "ab"), stderr=asyncio.subprocess.STDOUT)

    async def wait_connected(self, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while "connected to ARI" not in self.log_file.read_text():
            assert self.proc.returncode is None, self.log_file.read_text()
            assert asyncio.get_running_loop().time() < deadline, self.log_file.read_text()
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                await self.kill()


@pytest.fixture
async def controller_process(lab, hotline_config, tmp_path):
    process = ControllerProcess(hotline_config, tmp_path)
    try:
        yield process
    finally:
        await process.kill()


@pytest.fixture
async def builder(lab, hotline_config):
    """Policies and logs on the session database, without a controller of this process."""
    from ivr.store.db import open_database
    from tests.e2e.hotline import Hotline

    db = open_database(hotline_config.database_url, pool_size=2)
    try:
        yield Hotline(hotline_config, db)
    finally:
        await db.close_pool()


async def test_controller_killed_mid_escalation_resumes_the_call(builder, controller_process, sip_target):
    ringing = Phone.never_answer(calls=2)
    person = Phone.answer_and_press("1", delay=0.5)
    async with ringing, person:
        scenario = await builder.policy(Target([ringing], escalate_after=3), Target([person], escalate_after=10))
        await controller_process.start(builder.config.database_url)
        await controller_process.wait_connected()
        caller = Caller(scenario.number, sip_target, hangup_after=12)
        await caller.start()
        await builder.log_status(scenario, "Ringing")
        await controller_process.kill()            # mid-escalation: rule 1 is ringing
        await asyncio.sleep(0.5)
        await controller_process.start(builder.config.database_url)
        await controller_process.wait_connected()
        log = await final_log_without_actor(builder, scenario)
        result = await caller.wait(20)
        await controller_process.stop()
    items = await builder.items_of(log)
    assert result.answered and log.status == "Completed", (log.status, log.statusMessage)
    assert log.answeredByUserId == scenario.user_of(person).id
    assert [(i.status, i.escalationRuleOrder) for i in items] == [("Failed", 1), ("NoAnswer", 1), ("Completed", 2)]
    assert items[0].statusMessage == "The controller restarted while this number was ringing."


async def test_a_conversation_goes_on_through_a_controller_restart(builder, controller_process, sip_target):
    """Asterisk keeps the bridge: the restarted controller takes the call over, never cuts it."""
    person = Phone.answer_and_press("1", delay=0.5)
    async with person:
        scenario = await builder.policy(Target([person], escalate_after=10))
        await controller_process.start(builder.config.database_url)
        await controller_process.wait_connected()
        caller = Caller(scenario.number, sip_target, hangup_after=9)
        await caller.start()
        connected = await builder.log_status(scenario, "Connected")
        await controller_process.kill()            # mid-conversation
        await asyncio.sleep(0.5)
        await controller_process.start(builder.config.database_url)
        await controller_process.wait_connected()
        log = await final_log_without_actor(builder, scenario)
        caller_result = await caller.wait(20)
        person_result = await person.wait(20)
        await controller_process.stop()
    items = await builder.items_of(log)
    assert log.status == "Completed" and log.statusMessage == "Call completed; the caller hung up", log.statusMessage
    assert [(i.status, i.statusMessage) for i in items] == [("Completed", "Call completed; the caller hung up")]
    assert caller_result.hung_up_by == "local" and person_result.hung_up_by == "remote"
    # The talk time runs from the connection to the caller's hang-up, across the restart.
    talked = (log.endedAt - connected.updatedAt).total_seconds()
    assert abs(log.callDurationInSeconds - talked) <= 1 and log.callDurationInSeconds >= 3


async def final_log_without_actor(builder, scenario, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        logs = await builder.logs_of(scenario)
        if logs and logs[-1].status in ("Completed", "Failed", "NoAnswer", "CallerHungUp", "Busy"):
            items = await builder.items_of(logs[-1])
            if all(i.status in ("Completed", "Failed", "NoAnswer", "CallerHungUp", "Busy") for i in items):
                return logs[-1]
        assert asyncio.get_running_loop().time() < deadline, [(l.status, l.statusMessage) for l in logs]
        await asyncio.sleep(0.1)


class Outage:
    """An ARI websocket outage that loses the events ``lost`` selects, until ``reconnect()``."""

    def __init__(self, controller, lost):
        self.controller, self.lost, self.dispatch = controller, lost, controller.dispatch

    def __enter__(self) -> "Outage":
        self.controller.dispatch = lambda event: None if self.lost(event) else self.dispatch(event)
        return self

    async def reconnect(self) -> None:
        self.controller.dispatch = self.dispatch
        await self.controller.reconcile()  # what every (re)connection does

    def __exit__(self, *exc) -> None:
        self.controller.dispatch = self.dispatch


def stasis_start(kind: str):
    return lambda event: event.get("type") == "StasisStart" and (event.get("args") or [])[:1] == [kind]


async def test_a_greeting_whose_end_was_lost_with_the_websocket_does_not_strand_the_caller(hotline, sip_target):
    """Events lost during an outage: reconciliation finds the greeting over and the hunt begins."""
    phone = Phone.answer_and_press("1", delay=0.5)
    with Outage(hotline.controller, lambda event: event.get("type") == "PlaybackFinished") as outage:
        async with phone:
            scenario = await hotline.policy(Target([phone]), greeting="Hello.")
            caller = Caller(scenario.number, sip_target, hangup_after=6)
            await caller.start()
            await asyncio.sleep(3)            # "Hello." is long over, but its end was never heard
            assert not await hotline.items_of((await hotline.logs_of(scenario))[-1])
            await outage.reconnect()
            log = await hotline.final_log(scenario)
    assert log.status == "Completed", log.statusMessage
    assert [i.status for i in await hotline.items_of(log)] == ["Completed"]


async def test_a_leg_whose_answer_was_lost_with_the_websocket_is_connected_at_reconciliation(hotline, sip_target):
    phone = Phone.answer()
    with Outage(hotline.controller, stasis_start("leg")) as outage:
        async with phone:
            scenario = await hotline.policy(Target([phone], escalate_after=20), confirm=False)
            caller = Caller(scenario.number, sip_target, hangup_after=5)
            await caller.start()
            await asyncio.sleep(2)            # answered at once, but nobody heard of it
            assert (await hotline.logs_of(scenario))[-1].status == "Ringing"
            await outage.reconnect()
            log = await hotline.final_log(scenario)
    assert log.status == "Completed", log.statusMessage
    assert [i.status for i in await hotline.items_of(log)] == ["Completed"]


async def test_a_bridge_asterisk_refuses_ends_the_call_truthfully_not_in_silence(hotline, sip_target):
    ari = hotline.controller.ari
    add_to_bridge = ari.add_to_bridge
    attempts = []

    async def refuse(bridge_id, channel_ids):
        attempts.append(bridge_id)
        raise AriError(500, "Internal Server Error")

    ari.add_to_bridge = refuse
    phone = Phone.answer_and_press("1", delay=0.5)
    try:
        async with phone:
            scenario = await hotline.policy(Target([phone]))
            caller = Caller(scenario.number, sip_target, hangup_after=30)
            await caller.start()
            log = await hotline.final_log(scenario)
            caller_result = await caller.wait(10)
            phone_result = await phone.wait(10)
    finally:
        ari.add_to_bridge = add_to_bridge
    assert len(attempts) == 2
    assert log.status == "Failed" and log.statusMessage.startswith("Could not connect the caller with the on-call "
                                                                   "user: Asterisk could not bridge them (ARI 500")
    items = await hotline.items_of(log)
    assert [i.status for i in items] == ["Failed"] and items[0].statusMessage.startswith("Accepted, but")
    assert caller_result.hung_up_by == "remote" and phone_result.hung_up_by == "remote"


async def test_a_caller_left_in_stasis_without_a_call_gets_one_at_reconciliation(hotline, sip_target):
    """As after a controller that died between a caller's StasisStart and its log."""
    phone = Phone.answer_and_press("1", delay=0.5)
    with Outage(hotline.controller, stasis_start("incoming")) as outage:
        async with phone:
            scenario = await hotline.policy(Target([phone]))
            caller = Caller(scenario.number, sip_target, caller_id="+14155550123", hangup_after=3)
            await caller.start()
            await asyncio.sleep(1.5)          # in Stasis, in silence, with no log
            assert await hotline.logs_of(scenario) == []
            await outage.reconnect()
            log = await hotline.final_log(scenario)
            caller_result = await caller.wait(10)
    assert log.status == "Completed" and log.callerPhoneNumber == "+14155550123", log.statusMessage
    assert caller_result.answered and caller_result.hung_up_by == "local"


async def test_a_call_arriving_during_reconciliation_is_not_taken_for_lost(hotline, sip_target):
    """The channel list is a snapshot: a caller whose StasisStart lands while it is fetched is new."""
    controller = hotline.controller
    list_channels = controller.ari.channels
    phone = Phone.answer_and_press("1", delay=0.5)
    async with phone:
        scenario = await hotline.policy(Target([phone]))
        caller = Caller(scenario.number, sip_target, hangup_after=2)

        async def a_call_arrives_meanwhile():
            listing = await list_channels()
            before = set(controller.by_channel)
            await caller.start()
            while not set(controller.by_channel) - before:
                await asyncio.sleep(0.01)
            return listing

        controller.ari.channels = a_call_arrives_meanwhile
        try:
            await controller.reconcile()
        finally:
            controller.ari.channels = list_channels
        log = await hotline.final_log(scenario)
        caller_result = await caller.wait(10)
    assert log.status == "Completed", log.statusMessage
    assert caller_result.hung_up_by == "local"


async def test_calls_lost_with_asterisk_are_closed_and_service_resumes(hotline, lab, sip_target):
    ringing = Phone.never_answer()
    async with ringing:
        scenario = await hotline.policy(Target([ringing], escalate_after=10))
        caller = Caller(scenario.number, sip_target)
        await caller.start()
        await hotline.log_status(scenario, "Ringing")
        os.kill(lab.pid, signal.SIGKILL)           # Asterisk crashes with the call
        lab.down()
        lab.up(test_routes=True)
        log = await hotline.final_log(scenario, timeout=30)
    assert log.status == "Failed" and "lost" in log.statusMessage, log.statusMessage
    assert [i.status for i in await hotline.items_of(log)] == ["Failed"]
    # The controller reconnected by itself: the next call is served.
    person = Phone.answer_and_press("1", delay=0.5)
    async with person:
        again = await hotline.policy(Target([person]))
        caller = Caller(again.number, sip_target, hangup_after=4)
        await caller.start()
        assert (await hotline.final_log(again, timeout=30)).status == "Completed"
