"""Outbound calls of the contact-center calls API over the real Asterisk: the agent's phone (a sipp
phone on a verified SIP URI) rings first, then the end user's number (E.164, through the lab's
outbound trunk to the carrier phone) from the outbound number; the call row and its participants
say what happened."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ivr.core.contact_center.vocabulary import CallType
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.contact_center import OUTBOUND_CALL
from tests.e2e.conftest import running_hotline
from tests.e2e.hotline import Hotline
from tests.sip.parties import Phone

pytestmark = pytest.mark.e2e

OUTBOUND, OTHER_OUTBOUND = "+13392195276", "+17604108538"
END_USER = "+18596579625"


@pytest.fixture
async def hotline(lab, hotline_config, tmp_path):
    config = hotline_config.replace(contact_center__agent_ring_timeout=3.0,
                                    contact_center__end_user_ring_timeout=3.0,
                                    contact_center__choice_timeout=2.0,
                                    contact_center__recordings_dir=str(tmp_path / "recordings"))
    async with running_hotline(Hotline, config) as running:
        yield running


async def queue_call(hotline, agent_phone: Phone, *, outbound: str | None = OUTBOUND,
                     choices: tuple[str, ...] = (), record: bool = False) -> m.ContactCenterCall:
    """A call as POST /apps/api/v1/calls creates it (rows and the outbox message, in one transaction)."""

    def build():
        with hotline.db.atomic():
            project = m.Project.create(name="cc e2e")
            agent = m.User.create(project=project, name="Ada Agent", email=f"ada-{uuid.uuid4().hex[:6]}@example.com",
                                  isAgent=True)
            m.UserIncomingCallNumber.create(project=project, user=agent, sipUri=agent_phone.uri(), isVerified=True)
            call = m.ContactCenterCall.create(
                project=project, callType=CallType.OUTBOUND.value, status="assigned", assignedAt=m.utcnow(),
                agentId=agent.id, endUserNumber=END_USER, outboundNumber=outbound, outboundChoices=list(choices),
                recordRequested=record)
            m.ContactCenterParticipant.create(project=project, call=call, type="agent", userId=agent.id,
                                              address=agent_phone.uri())
            m.ContactCenterParticipant.create(project=project, call=call, type="end_user", address=END_USER)
            outbox.put(OUTBOUND_CALL, {"call": str(call.id)})
            return call

    return await hotline.db.run(build)


async def final_call(hotline, call: m.ContactCenterCall, timeout: float = 25.0):
    """The call once it ended and its actor is gone; with its participants by type."""
    deadline = time.monotonic() + timeout
    service = hotline.runner.app[__import__("ivr.main", fromlist=["CONTACT_CENTER"]).CONTACT_CENTER]
    while True:
        row = await hotline.db.get(m.ContactCenterCall.select().where(m.ContactCenterCall.id == call.id))
        if row.status in ("finished", "failed") and str(call.id) not in service.actors:
            parties = await hotline.db.list(m.ContactCenterParticipant.select().where(
                m.ContactCenterParticipant.call == call.id))
            return row, {p.type: p for p in parties}
        assert time.monotonic() < deadline, f"the call did not end: {row.status}"
        await asyncio.sleep(0.1)


async def test_agent_answers_then_end_user_answers_and_hangs_up(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.answer(port=carrier_port, hold=2.0, max_wait=20) as user:
        call = await queue_call(hotline, agent)
        row, parties = await final_call(hotline, call)
        agent_result, user_result = await agent.wait(10), await user.wait(10)
    assert (row.status, row.failReason, row.disconnectedBy) == ("finished", "nothing", "disconnected_by_end_user")
    assert row.connectedAt is not None and row.endsAt is not None and 1 <= row.callDuration <= 4
    assert agent_result.answered and user_result.answered
    assert user_result.call.caller_number == OUTBOUND  # the end user sees the outbound number
    assert user_result.hung_up_by == "local" and agent_result.hung_up_by == "remote"
    assert parties["agent"].status == parties["end_user"].status == "finished"
    assert parties["agent"].callDuration >= parties["end_user"].callDuration >= 1


async def test_agent_hangs_up_first(hotline, carrier_port):
    async with Phone.answer(hold=2.0, max_wait=20) as agent, Phone.answer(port=carrier_port, max_wait=20) as user:
        call = await queue_call(hotline, agent)
        row, _ = await final_call(hotline, call)
        user_result = await user.wait(10)
    assert (row.status, row.disconnectedBy) == ("finished", "disconnected_by_agent")
    assert user_result.hung_up_by == "remote"


async def test_end_user_busy_fails_the_call(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.busy(port=carrier_port, max_wait=20):
        call = await queue_call(hotline, agent)
        row, parties = await final_call(hotline, call)
        agent_result = await agent.wait(15)
    assert (row.status, row.failReason, row.disconnectedBy) == ("failed", "end_user_busy",
                                                                 "disconnected_by_end_user")
    assert "busy" in row.failDetails.lower() and row.connectedAt is None and row.endsAt is not None
    assert (parties["end_user"].status, parties["end_user"].failReason) == ("failed", "end_user_busy")
    assert parties["agent"].status == "finished" and agent_result.hung_up_by == "remote"


async def test_agent_does_not_answer(hotline, carrier_port):
    async with Phone.never_answer(max_wait=20) as agent, Phone.answer(port=carrier_port, max_wait=8) as user:
        call = await queue_call(hotline, agent)
        row, parties = await final_call(hotline, call)
        agent_result = await agent.wait(10)
        user_result = await user.stop()
    assert (row.status, row.failReason) == ("failed", "agent_no_answer")
    assert agent_result.canceled and not user_result.received_call  # the end user is never dialed
    assert (parties["agent"].status, parties["end_user"].status) == ("failed", "failed")


async def test_agent_chooses_the_outbound_number_on_the_keypad(hotline, carrier_port):
    async with Phone.answer_and_press("2", delay=1.0, max_wait=20) as agent, \
            Phone.answer(port=carrier_port, hold=1.0, max_wait=20) as user:
        call = await queue_call(hotline, agent, outbound=None, choices=(OUTBOUND, OTHER_OUTBOUND))
        row, _ = await final_call(hotline, call)
        user_result = await user.wait(10)
    assert (row.status, row.outboundNumber) == ("finished", OTHER_OUTBOUND)
    assert user_result.call.caller_number == OTHER_OUTBOUND


async def test_a_recorded_call_leaves_its_mixed_recording_on_disk(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.answer(port=carrier_port, hold=2.0, max_wait=20):
        call = await queue_call(hotline, agent, record=True)
        row, _ = await final_call(hotline, call)
    assert row.recordingFile == f"{call.projectId}/{call.id}.wav"
    path = hotline.config.recordings_dir / row.recordingFile
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and len(data) > 8000  # about 2 s of 8 kHz audio
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_call_left_by_a_stopped_controller_is_closed_and_its_agent_freed(hotline, carrier_port):
    """The controller stops while the agent's phone rings: the next one hangs the leg up, fails the call
    as lost, and the agent is available again (not busy forever)."""
    from ivr.store.contact_center import agent_is_busy

    async with Phone.never_answer(max_wait=30) as agent:
        call = await queue_call(hotline, agent)
        await agent.wait_for("invite", timeout=10)
        assert await hotline.db.run(agent_is_busy, call.agentId)
        await hotline.stop()
        await hotline.start()
        row, parties = await final_call(hotline, call)
        agent_result = await agent.wait(10)
    assert (row.status, row.failReason) == ("failed", "lost") and "controller stopped" in row.failDetails
    assert parties["agent"].status == "failed" and agent_result.canceled
    assert not await hotline.db.run(agent_is_busy, call.agentId)
