"""The call shells' reads and writes (compiled statements) on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from types import SimpleNamespace

import pytest

from ivr.core.engine import UpdateItem, UpdateLog
from ivr.store import callstore
from ivr.store import models as m
from ivr.store.db import Reads, open_database


def build(number: str):
    project = m.Project.create(name="callstore")
    policy = m.IncomingCallPolicy.create(project=project, name="Desk", slug=f"desk-{uuid.uuid4().hex}",
                                         routingPhoneNumber=number, greetingMessage="Hello",
                                         repeatPolicyIfNoOneAnswers=True, repeatPolicyIfNoOneAnswersTimes=2)
    alice, bob, carol = (m.User.create(project=project, name=n) for n in ("Alice", "Bob", "Carol"))
    numbers = {}
    for user, verified in ((alice, True), (bob, True), (carol, False)):
        numbers[user.name] = m.UserIncomingCallNumber.create(
            project=project, user=user, sipUri=f"sip:{user.name.lower()}@10.0.0.1", isVerified=verified)
    team = m.Team.create(project=project, name="SRE")
    for user in (bob, carol, alice):
        m.TeamMember.create(project=project, team=team, user=user)
    m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=policy, order=1, user=alice,
                                              escalateAfterSeconds=5)
    m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=policy, order=2, team=team)
    m.IncomingCallPolicyEscalationRule.create(project=project, incomingCallPolicy=policy, order=3, user=carol)
    return project, policy, numbers


@pytest.fixture
async def store(database_url):
    """A database pool and its reader, and a policy (``build``) on a routing number of its own."""
    db = open_database(database_url, pool_size=2)
    reads = Reads(db, database_url)
    number = f"+1212{uuid.uuid4().int % 8000000 + 2000000:07d}"
    try:
        yield SimpleNamespace(db=db, reads=reads, number=number, built=await db.run(build, number))
    finally:
        reads.close()
        await db.close_pool()


async def test_prepare_write_and_read_back(store):
    db, reads, number = store.db, store.reads, store.number
    project, policy, numbers = store.built
    prepared = await reads(callstore.prepare_call, number[2:], "4155550123", "US", 7.0)
    setup = prepared.setup
    assert prepared.policy_id == policy.id and prepared.project_id == project.id
    assert prepared.caller_number == "+14155550123" and setup.caller_number == "+14155550123"
    assert (setup.policy_name, setup.greeting, setup.repeat_times, setup.confirm_timeout) == ("Desk", "Hello", 2, 7.0)
    assert [(r.order, r.escalate_after_seconds) for r in setup.rules] == [(1, 5.0), (2, 30.0), (3, 30.0)]
    assert [c.address for c in setup.rules[0].contacts] == ["sip:alice@10.0.0.1"]
    # A team rings its members in the order they joined; Carol's number is not verified.
    assert [c.address for c in setup.rules[1].contacts] == ["sip:bob@10.0.0.1", "sip:alice@10.0.0.1"]
    assert setup.rules[2].contacts == ()
    assert await reads(callstore.prepare_call, "+12125550000", "", "US", 7.0) is None

    def write():
        callstore.open_log(prepared, "chan-1", 1795400000.25)
        contact = setup.rules[0].contacts[0]
        callstore.create_item(prepared.log_id, project.id, "leg-1", contact, setup.rules[0].rule_id, 1,
                              1795400001.5)
        callstore.update_item(prepared.log_id, UpdateItem("leg-1", status=m.CallStatus.COMPLETED, is_answered=True,
                                                          dial_seconds=1.25, ended_at=1795400009.0))
        callstore.update_log(prepared.log_id, UpdateLog(status=m.CallStatus.COMPLETED, talk_seconds=6.6,
                                                        ended_at=1795400009.0, answered_by_user_id=contact.user_id))
        log = m.IncomingCallLog.get_by_id(prepared.log_id)
        items = list(m.IncomingCallLogItem.select().where(m.IncomingCallLogItem.incomingCallLog == log.id))
        return log, items

    log, items = await db.run(write)
    assert (log.status, log.callDurationInSeconds, log.callerPhoneNumber, log.routingPhoneNumber) == \
        ("Completed", 7, "+14155550123", number)
    assert log.answeredByUserId == numbers["Alice"].userId and log.callProviderCallId == "chan-1"
    assert log.startedAt.isoformat() == "2026-11-23T02:13:20.250000"
    assert [(i.status, i.isAnswered, i.dialDurationInSeconds, i.numberDialed) for i in items] == \
        [("Completed", True, 1.25, "sip:alice@10.0.0.1")]
    assert items[0].userIncomingCallNumberId == numbers["Alice"].id and items[0].escalationRuleOrder == 1


async def test_closing_a_lost_call_never_overwrites_a_finished_one(store):
    """The reconciliation reads open logs, then lists channels: a call may end in between."""
    db, reads, number = store.db, store.reads, store.number
    prepared = await reads(callstore.prepare_call, number, "4155550123", "US", 7.0)

    def scenario():
        callstore.open_log(prepared, "chan-2", 1795400000.0)
        open_rows = callstore.open_logs()
        callstore.update_log(prepared.log_id, UpdateLog(status=m.CallStatus.COMPLETED, ended_at=1795400009.0,
                                                        talk_seconds=9))
        for row in open_rows:
            if row.id == prepared.log_id:
                callstore.close_lost_call(row.id, "lost", 1795400010.0)
        return m.IncomingCallLog.get_by_id(prepared.log_id)

    log = await db.run(scenario)
    assert (log.status, log.callDurationInSeconds) == ("Completed", 9) and log.statusMessage != "lost"


async def test_open_logs_are_those_of_one_asterisk_when_it_has_a_system_name(store):
    """Controllers of several Asterisks may share a database: each reconciles its own calls only."""
    db, reads, number = store.db, store.reads, store.number
    prepared = await reads(callstore.prepare_call, number, "4155550123", "US", 7.0)
    tag = uuid.uuid4().hex[:8]

    def scenario():
        callstore.open_log(prepared, f"pbx-a{tag}-1795400000.1", 1795400000.0)
        other = callstore.prepare_call(number, "4155550123", "US", 7.0)
        callstore.open_log(other, f"pbx-b{tag}-1795400000.1", 1795400000.0)
        mine = {row.callProviderCallId for row in callstore.open_logs(f"pbx-a{tag}-")}
        every = {row.callProviderCallId for row in callstore.open_logs()}
        return mine, every

    mine, every = await db.run(scenario)
    assert mine == {f"pbx-a{tag}-1795400000.1"}
    assert {f"pbx-a{tag}-1795400000.1", f"pbx-b{tag}-1795400000.1"} <= every


def test_every_field_of_a_log_update_has_its_column():
    """The engine's typed updates name no column: the store maps each field, and a field without a
    column, or a column renamed in the models, fails here (and at import), not in a call's writer."""
    assert set(callstore.LOG_COLUMNS) == {f.name for f in dataclasses.fields(UpdateLog)}
    assert set(callstore.ITEM_COLUMNS) == {f.name for f in dataclasses.fields(UpdateItem)} - {"leg_id"}
    for model, columns in ((m.IncomingCallLog, callstore.LOG_COLUMNS), (m.IncomingCallLogItem, callstore.ITEM_COLUMNS)):
        assert set(columns.values()) <= set(model._meta.fields), model


@pytest.mark.parametrize("caller", ["sip:" + "x" * 60 + "@203.0.113.9", "+1 (415) 555-0123 ext. 4455667788990011",
                                    "\x00\x1b[31mred\x07" * 8])
async def test_no_caller_id_keeps_a_call_from_being_logged(store, caller):
    """A caller ID longer than the column (PostgreSQL refused the insert: the call went unlogged)
    or full of control characters: the log is written, with the raw value kept beside it."""
    prepared = await store.reads(callstore.prepare_call, store.number, caller, "US", 7.0)

    def write():
        callstore.open_log(prepared, f"chan-{uuid.uuid4().hex[:8]}", 1795400000.0)
        return m.IncomingCallLog.get_by_id(prepared.log_id)

    log = await store.db.run(write)
    assert len(log.callerPhoneNumber) <= 32 and log.callerPhoneNumber.isprintable()
    assert log.callerIdRaw == "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in caller)
    assert len(prepared.setup.caller_number) <= 32    # what the confirmation prompt speaks


async def test_a_plain_number_is_stored_in_e164_without_a_raw_copy(store):
    prepared = await store.reads(callstore.prepare_call, store.number, "(415) 555-0123", "US", 7.0)
    assert (prepared.caller_number, prepared.caller_raw) == ("+14155550123", None)


async def test_the_setup_carries_the_hours_the_lists_and_the_caller_in_e164(store, caplog):
    db, reads, number = store.db, store.reads, store.number
    _, policy, _ = store.built
    hours = [{"type": "Daily", "startTime": "09:00", "endTime": "17:00", "days": ["Monday"]}]

    def configure(**values):
        m.IncomingCallPolicy.update(**values).where(m.IncomingCallPolicy.id == policy.id).execute()

    await db.run(configure, businessHours=hours, businessHoursTimeZone="Europe/Paris", afterHoursMessage="Closed.",
                 callerBlockList=["+1415*"], callerAllowList=["+14155550123", "+44*"], blockedCallerMessage="No.")
    setup = (await reads(callstore.prepare_call, number, "(415) 555-0123", "US", 7.0)).setup
    assert setup.caller_e164 == "+14155550123"  # a national caller ID, read in sip.default_region
    assert (setup.caller_block_list, setup.caller_allow_list) == (("+1415*",), ("+14155550123", "+44*"))
    assert (setup.business_hours_time_zone, setup.after_hours_message, setup.blocked_caller_message) == (
        "Europe/Paris", "Closed.", "No.")
    assert [w.days for w in setup.business_hours] == [frozenset({0})] and not setup.admitted
    for anonymous in ("anonymous", "", "sip:alice@10.0.0.1"):
        assert (await reads(callstore.prepare_call, number, anonymous, "US", 7.0)).setup.caller_e164 is None
    # Values the API would refuse (edited by hand) are logged and left out: the call is still taken.
    await db.run(configure, businessHours=[{"type": "Hourly"}], callerBlockList=["+1415*", "nope"])
    setup = (await reads(callstore.prepare_call, number, "+14155550123", "US", 7.0)).setup
    assert setup.business_hours == () and setup.caller_block_list == ("+1415*",)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "business hours cannot be read" in messages and "'nope'" in messages


@pytest.mark.parametrize(("status", "admitted"), [("Initiated", False), ("Ringing", True), ("Escalated", True)])
async def test_a_resumed_call_is_screened_again_only_if_it_never_rang(store, status, admitted):
    db, number = store.db, store.number
    _, policy, _ = store.built

    def resume():
        log = m.IncomingCallLog.create(project=policy.projectId, incomingCallPolicyId=policy.id, status=status,
                                       callerPhoneNumber="+14155550123", currentEscalationRuleOrder=2)
        return callstore.resume_setup(log, "resumed", 7.0)

    setup = await db.run(resume)
    assert (setup.admitted, setup.resume_from_order, setup.caller_e164) == (admitted, 2, "+14155550123")


async def test_a_voicemail_is_kept_with_its_alert_in_one_write(store):
    """A policy that takes voicemail says so in the set-up; the file name and the signed alert's outbox
    message are written together (no alert without a webhook)."""
    from ivr.store import outbox

    db, reads, number = store.db, store.reads, store.number
    project, policy, _ = store.built

    def configure():
        m.IncomingCallPolicy.update(voicemailOnNoAnswer=True, voicemailMaxSeconds=45).where(
            m.IncomingCallPolicy.id == policy.id).execute()

    await db.run(configure)
    prepared = await reads(callstore.prepare_call, number, "4155550123", "US", 7.0)
    assert prepared.setup.voicemail_on_no_answer and prepared.setup.voicemail_max_seconds == 45.0
    quiet = await reads(callstore.prepare_call, number, "4155550124", "US", 7.0)

    def scenario():
        before = {row.id for row in m.OutboxMessage.select()}
        callstore.open_log(prepared, "chan-vm", 1795400000.0)
        callstore.open_log(quiet, "chan-vm-2", 1795400000.0)
        callstore.update_log(prepared.log_id, UpdateLog(status=m.CallStatus.NO_ANSWER, status_message="No one answered"))
        callstore.save_voicemail(prepared.log_id, f"{project.id}/policy-{prepared.log_id}.wav", True)
        callstore.save_voicemail(quiet.log_id, f"{project.id}/policy-{quiet.log_id}.wav", False)
        callstore.update_log(quiet.log_id, UpdateLog(status=m.CallStatus.NO_ANSWER, status_message="No one answered"))
        callstore.voicemail_not_kept(quiet.log_id, "disk full")
        new = [row for row in m.OutboxMessage.select() if row.id not in before]
        return (m.IncomingCallLog.get_by_id(prepared.log_id), m.IncomingCallLog.get_by_id(quiet.log_id), new,
                callstore.voicemail_file(project.id, prepared.log_id), callstore.voicemail_file(uuid.uuid4(),
                                                                                                 prepared.log_id))

    log, other, messages, mine, elsewhere = await db.run(scenario)
    assert log.voicemailFile == f"{project.id}/policy-{log.id}.wav" and log.voicemailReceivedAt is not None
    assert log.status == "NoAnswer" and mine == log.voicemailFile and elsewhere is None
    assert other.statusMessage == "No one answered, but it could not be kept: disk full"
    [message] = messages
    assert message.kind == outbox.WEBHOOK
    assert message.payload["event"] == "incoming-call-log.voicemail"
    assert message.payload["incomingCallLogId"] == str(log.id) and message.payload["policy"] == "Desk"
    assert message.payload["projectId"] == str(project.id) and message.payload["callerPhoneNumber"] == "+14155550123"
    assert message.payload["voicemailUrl"] == f"/api/incoming-call-log/{log.id}/voicemail"


async def test_the_call_writer_runs_queued_writes_in_order_and_goes_on_after_a_failed_one(store, caplog):
    """``write_in_order`` (the shells' log writer): what a call queued runs in one go, in order, in the
    database's writer thread on SQLite (through the asyncio database elsewhere); a failed write is
    logged and the next ones still run."""
    import asyncio
    import threading

    from ivr.shells.base import write_in_order

    db, reads, number = store.db, store.reads, store.number
    project, policy, numbers = store.built
    prepared = await reads(callstore.prepare_call, number, "4155550123", "US", 7.0)
    contact = prepared.setup.rules[0].contacts[0]
    threads = set()

    def where():
        threads.add(threading.current_thread().name)

    def fails():
        raise RuntimeError("a write that fails")

    writes: asyncio.Queue = asyncio.Queue()
    for job in ((callstore.open_log, prepared, "chan-w", 1795400000.0), (where,), (fails,),
                (callstore.create_item, prepared.log_id, project.id, "leg-w", contact,
                 prepared.setup.rules[0].rule_id, 1, 1795400001.0),
                (callstore.update_log, prepared.log_id, UpdateLog(status=m.CallStatus.RINGING,
                                                                  current_rule_order=1))):
        writes.put_nowait(job)
    writer = asyncio.get_running_loop().create_task(write_in_order(db, writes, "call w"))
    await asyncio.sleep(0.05)
    writes.put_nowait((callstore.update_log, prepared.log_id, UpdateLog(status=m.CallStatus.COMPLETED)))
    writes.put_nowait(None)
    await asyncio.wait_for(writer, 10)

    log = await db.run(m.IncomingCallLog.get_by_id, prepared.log_id)
    items = await db.list(m.IncomingCallLogItem.select().where(m.IncomingCallLogItem.incomingCallLog == log.id))
    assert (log.status, log.currentEscalationRuleOrder, log.callProviderCallId) == ("Completed", 1, "chan-w")
    assert [(i.callProviderCallId, i.status, i.isAnswered) for i in items] == [("leg-w", "Ringing", False)]
    assert "a write failed (fails)" in caplog.text
    if getattr(db, "writer", None) is not None:
        assert threads == {"hotline-writer_0"}
