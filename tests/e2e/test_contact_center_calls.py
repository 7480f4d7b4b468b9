"""Outbound calls of the contact-center calls API over the real Asterisk: ``POST /apps/api/v1/calls``,
then the agent's phone (a sipp phone on a verified SIP URI) rings first, then the end user's number
(E.164, through the lab's outbound trunk to the carrier phone) from the outbound number; the call
object (``GET /apps/api/v1/calls/:id``) and its participants say what happened."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ivr.core.contact_center.vocabulary import CallType
from ivr.store import models as m
from ivr.store import outbox
from ivr.store.contact_center import OUTBOUND_CALL
import aiohttp
from aiohttp import web

from api.auth import hash_key, new_key
from ivr.main import CONTACT_CENTER, build_app
from tests.e2e.conftest import running_hotline
from tests.e2e.hotline import Hotline
from tests.sip.parties import Phone

pytestmark = pytest.mark.e2e

OUTBOUND, OTHER_OUTBOUND = "+13392195276", "+17604108538"
END_USER = "+18596579625"


class ContactCenterHotline(Hotline):
    """What `hotline serve` runs, in one process for the test: the API on a loopback port and the call
    services (the ARI controller and the contact center)."""

    async def start(self) -> None:
        self.runner = web.AppRunner(build_app(self.config, db=self.db, api=True), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        await asyncio.wait_for(self.controller.ari.connected.wait(), 10)
        await asyncio.sleep(0.05)

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d" % self.runner.addresses[0][1]


@pytest.fixture
async def hotline(lab, hotline_config, tmp_path):
    config = hotline_config.replace(contact_center__agent_ring_timeout=3.0,
                                    contact_center__end_user_ring_timeout=3.0,
                                    contact_center__choice_timeout=2.0,
                                    contact_center__recordings_dir=str(tmp_path / "recordings"),
                                    api__rate_limit=0)
    async with running_hotline(ContactCenterHotline, config) as running:
        yield running


class Desk:
    """A project with an API key, an agent (on the given phone) and outbound numbers; its calls go
    through the calls API with HTTP Basic auth (the project's id, the key)."""

    def __init__(self, hotline, project, key: str, agent: m.User):
        self.hotline, self.project, self.key, self.agent = hotline, project, key, agent

    @classmethod
    async def open(cls, hotline, agent_phone: Phone, *, outbound: tuple[str, ...] = (OUTBOUND,),
                   default: bool = True, availability: str = "Available") -> "Desk":
        def build():
            project = m.Project.create(name="cc e2e")
            secret = new_key()
            m.ApiKey.create(project=project, name="e2e", keyHash=hash_key(secret), keyPrefix=secret[:10],
                            role="Project Admin", permissions=[])
            agent = m.User.create(project=project, name="Ada Lovelace", email=f"ada-{uuid.uuid4().hex[:6]}@example.com",
                                  isAgent=True, agentAvailability=availability)
            m.UserIncomingCallNumber.create(project=project, user=agent, sipUri=agent_phone.uri(), isVerified=True)
            for index, number in enumerate(outbound):
                m.OutboundPhoneNumber.create(project=project, phoneNumber=number, isDefault=default and index == 0)
            return cls(hotline, project, secret, agent)

        return await hotline.db.run(build)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(str(self.project.id), self.key)}

    async def request(self, method: str, path: str, body=None, *, raw: bool = False) -> tuple[int, object]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"{self.hotline.base_url}/apps/api/v1/calls{path}", json=body,
                                       headers=self.auth) as resp:
                return resp.status, (await resp.read() if raw else await resp.json())

    async def menu(self, **fields) -> m.CallMenu:
        return await self.hotline.db.run(lambda: m.CallMenu.create(project=self.project, name="Sales", **fields))

    async def call(self, **extra) -> tuple[int, object]:
        body = {"call_type": "Voice Outbound (API)", "agent_email": self.agent.email,
                "end_user_number": "+1 859-657-9625", "lang": "en", **extra}
        return await self.request("POST", "", body)

    async def last_call(self) -> m.ContactCenterCall:
        return await self.hotline.db.get(m.ContactCenterCall.select().where(
            m.ContactCenterCall.project == self.project.id).order_by(m.ContactCenterCall.createdAt.desc()))

    async def final(self, timeout: float = 25.0) -> dict:
        """The call object once the call ended (and its actor is gone)."""
        call = await self.last_call()
        await final_call(self.hotline, call, timeout)
        status, body = await self.request("GET", f"/{call.numericId}")
        assert status == 200, body
        return body


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
    service = hotline.runner.app[CONTACT_CENTER]
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


# -- through the calls API ---------------------------------------------------------------------


async def test_api_call_answered_by_the_agent_then_the_end_user(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.answer(port=carrier_port, hold=2.0, max_wait=20) as user:
        desk = await Desk.open(hotline, agent)
        status, created = await desk.call()
        assert status == 201, created
        assert (created["status"], created["voip_provider"]) == ("assigned", "voip_provider_asterisk")
        assert [p["type"] for p in created["participants"]] == ["agent", "end_user"]
        call = await desk.final()
        user_result = await user.wait(10)
    assert (call["status"], call["fail_reason"], call["disconnected_by"]) == ("finished", "nothing",
                                                                              "disconnected_by_end_user")
    assert call["connected_at"] and call["ends_at"] and 1 <= call["call_duration"] <= 4
    assert call["wait_duration"] >= 0 and call["outbound_number"] == "+1 339-219-5276"
    assert [(p["type"], p["status"]) for p in call["participants"]] == [("agent", "finished"),
                                                                        ("end_user", "finished")]
    assert all(p["connected_at"] and p["ended_at"] and p["call_duration"] >= 1 for p in call["participants"])
    assert user_result.call.caller_number == OUTBOUND
    metrics = hotline.controller.metrics
    assert metrics.cc_calls.labels("finished", "nothing")._value.get() >= 1
    assert metrics.cc_calls_in_progress._value.get() == 0


async def test_api_call_to_a_busy_end_user_fails(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.busy(port=carrier_port, max_wait=20):
        desk = await Desk.open(hotline, agent)
        assert (await desk.call())[0] == 201
        call = await desk.final()
    assert (call["status"], call["fail_reason"]) == ("failed", "end_user_busy")
    assert "busy" in call["fail_details"].lower() and call["connected_at"] is None
    assert call["participants"][1]["fail_reason"] == "end_user_busy"


async def test_api_call_the_agent_does_not_answer(hotline, carrier_port):
    async with Phone.never_answer(max_wait=20) as agent, Phone.answer(port=carrier_port, max_wait=8) as user:
        desk = await Desk.open(hotline, agent)
        assert (await desk.call())[0] == 201
        call = await desk.final()
        user_result = await user.stop()
    assert (call["status"], call["fail_reason"]) == ("failed", "agent_no_answer")
    assert [p["status"] for p in call["participants"]] == ["failed", "failed"]
    assert not user_result.received_call


async def test_api_call_to_an_unavailable_agent_is_refused_before_any_call(hotline, carrier_port):
    async with Phone.answer(max_wait=6) as agent, Phone.answer(port=carrier_port, max_wait=6) as user:
        desk = await Desk.open(hotline, agent, availability="Unavailable")
        assert await desk.call() == (400, {"message": "Agent is not available to take this call"})
        await asyncio.sleep(1.0)  # what a queued call would take to ring
        agent_result, user_result = await agent.stop(), await user.stop()
    assert not agent_result.received_call and not user_result.received_call
    assert await hotline.db.count(m.ContactCenterCall.select().where(
        m.ContactCenterCall.project == desk.project.id)) == 0


async def test_api_two_outbound_numbers_the_agent_chooses_on_the_keypad(hotline, carrier_port):
    async with Phone.answer_and_press("2", delay=1.0, max_wait=20) as agent, \
            Phone.answer(port=carrier_port, hold=1.0, max_wait=20) as user:
        desk = await Desk.open(hotline, agent, outbound=(OUTBOUND, OTHER_OUTBOUND), default=False)
        body = {"call_type": "Voice Outbound (API)", "agent_email": desk.agent.email,
                "end_user_number": "+1 859-657-9625", "lang": "en"}
        assert await desk.request("POST", "", body) == (202, body)  # the request, echoed
        call = await desk.final()
        user_result = await user.wait(10)
    assert (call["status"], call["outbound_number"]) == ("finished", "+1 760-410-8538")
    assert user_result.call.caller_number == OTHER_OUTBOUND


async def test_api_call_for_a_queue_that_asks_is_recorded_when_granted(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.answer(port=carrier_port, hold=2.0, max_wait=20):
        desk = await Desk.open(hotline, agent)
        menu = await desk.menu(recordingOption="ask")
        status, created = await desk.call(menu_id=menu.numericId, recording_permission="recording_permission_granted")
        assert status == 201, created
        assert created["recording_permission"] == "recording_permission_granted"
        call = await desk.final()
    assert call["status"] == "finished" and call["recording_url"].endswith(f"/{call['id']}/recording")
    status, wav = await desk.request("GET", f"/{call['id']}/recording", raw=True)
    assert status == 200 and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 8000
    other = await Desk.open(hotline, agent)  # another project's key never gets it
    assert (await other.request("GET", f"/{call['id']}/recording"))[0] == 404


async def test_api_call_for_a_queue_that_asks_is_not_recorded_when_denied(hotline, carrier_port):
    async with Phone.answer(max_wait=20) as agent, Phone.answer(port=carrier_port, hold=1.0, max_wait=20):
        desk = await Desk.open(hotline, agent)
        menu = await desk.menu(recordingOption="ask")
        assert (await desk.call(menu_id=menu.numericId,
                                recording_permission="recording_permission_denied"))[0] == 201
        call = await desk.final()
    assert call["status"] == "finished" and call["recording_url"] is None
    assert not any(hotline.config.recordings_dir.rglob("*.wav")) or all(
        str(desk.project.id) not in str(p) for p in hotline.config.recordings_dir.rglob("*.wav"))
