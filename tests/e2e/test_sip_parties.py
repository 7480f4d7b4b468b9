"""The SIP harness itself, caller against phone directly (no Asterisk): every behaviour
reports what happened, from both sides."""

from __future__ import annotations

import asyncio

import pytest

from tests.sip.parties import Caller, Phone, sipp_available

pytestmark = [pytest.mark.e2e]


@pytest.fixture(autouse=True)
def _needs_sipp():
    assert sipp_available(), "sipp is missing: `make test` installs it (Debian package sip-tester)"


async def _call(phone: Phone, **caller_options):
    async with phone:
        caller = Caller("4155550100", (phone.ip, phone.port), caller_id="15550001111", **caller_options)
        await caller.start()
        return await caller.wait(10), await phone.wait(10)


async def test_every_phone_behaviour_reports_truthfully():
    (answered_c, answered_p), (hangs_c, hangs_p), (busy_c, busy_p), (never_c, never_p), \
        (late_c, late_p), (keys_c, keys_p), (silent_c, silent_p) = await asyncio.gather(
            _call(Phone.answer(hold=0.3)),
            _call(Phone.answer(), hangup_after=0.3),
            _call(Phone.busy()),
            _call(Phone.never_answer(), cancel_after=0.5),
            _call(Phone.answer_after(0.5, hold=0.2)),
            _call(Phone.answer_and_press("1#", delay=0.1), hangup_after=1.0),
            _call(Phone.answer_silent(hold=0.5)),
        )
    # The phone hangs up.
    assert answered_c.answered and answered_c.hung_up_by == "remote" and answered_c.final_status == 200
    assert answered_p.answered and answered_p.hung_up_by == "local"
    assert 0.25 < answered_c.call.talk_time < 1.0
    # The caller hangs up.
    assert hangs_c.hung_up_by == "local" and hangs_p.hung_up_by == "remote"
    # Busy.
    assert busy_c.final_status == busy_p.final_status == 486 and not busy_c.answered
    # Never answers: the caller gives up, the phone sees the CANCEL.
    assert never_c.canceled and never_c.final_status == 487 and never_p.canceled
    assert never_c.call.duration >= 0.5
    # Answers late.
    assert late_c.answered and late_c.call.setup_time >= 0.45 and late_p.call.ringing_at is not None
    # Presses keys (RFC 2833 from sip-tester's pcaps).
    assert keys_p.answered and keys_p.digits == "1#" and keys_c.digits == ""
    # Answers and stays silent.
    assert silent_p.answered and silent_p.digits == "" and silent_c.hung_up_by == "remote"
    # Both sides agree on who called whom.
    assert answered_p.call.caller_number == "15550001111" and answered_p.call.dialed == "4155550100"
    assert answered_c.call.dialed == "4155550100"


async def test_a_phone_that_gets_no_call_reports_none():
    phone = await Phone.answer().start()
    result = await phone.stop()
    assert not result.received_call and not result.answered and result.final_status is None


async def test_many_calls_from_one_caller():
    phone = await Phone.answer(calls=20).start()
    caller = Caller("4155550100", (phone.ip, phone.port), calls=20, concurrency=10, rate=50, hangup_after=0.2)
    await caller.start()
    caller_result, phone_result = await caller.wait(20), await phone.wait(10)
    assert caller_result.successful == 20 and caller_result.failed == 0
    assert phone_result.answered_count == 20
    assert {c.hung_up_by for c in phone_result.calls} == {"remote"}
