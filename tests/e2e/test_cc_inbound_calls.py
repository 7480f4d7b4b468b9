"""Inbound contact-center calls over the real Asterisk: a sipp caller dials a root IVR menu's routing
number, walks the menu with RFC 2833 keys, and is offered to the queue's agents (sipp phones on
verified SIP URIs) who must press 1; or is handed to an Incoming Call Policy; or, after hours, leaves
a voicemail that is recorded to a file. The call object (``GET /apps/api/v1/calls/:id``) says what
happened."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
import wave

import pytest

from ivr.main import CONTACT_CENTER
from ivr.store import models as m
from tests.e2e.hotline import Target, routing_number
from tests.e2e.test_contact_center_calls import ContactCenterHotline, Desk
from tests.e2e.conftest import running_hotline
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e
OUTBOUND = "+13392195276"


@pytest.fixture
async def hotline(lab, hotline_config, tmp_path):
    config = hotline_config.replace(contact_center__agent_ring_timeout=4.0,
                                    contact_center__offer_confirm_timeout=2.0,
                                    contact_center__menu_input_timeout=3.0,
                                    contact_center__queue_announce_every=0.0,
                                    contact_center__voicemail_max_silence=3.0,
                                    contact_center__recordings_dir=str(tmp_path / "recordings"),
                                    api__rate_limit=0)
    async with running_hotline(ContactCenterHotline, config) as running:
        yield running


async def build_tree(hotline, agents: list[tuple[Phone, int]], *, offer_type: str = "multicast",
                     group_delay: int = 30, root_state: str = "open", policy_phone: Phone | None = None,
                     max_wait: int = 60, no_agent: str = "voicemail", callback_delay: int = 900,
                     redirect_to: str | None = None):
    """A project with a root IVR menu (key 1: the Sales queue of ``agents`` (phone, cascade group);
    key 2: a leaf handing calls to a policy ringing ``policy_phone``) and an API key for it."""
    scenario = await hotline.policy(Target([policy_phone], escalate_after=4)) if policy_phone else None

    def build():
        project = scenario.policy.project if scenario else m.Project.create(name="cc inbound e2e")
        from api.auth import hash_key, new_key
        secret = new_key()
        m.ApiKey.create(project=project, name="e2e", keyHash=hash_key(secret), keyPrefix=secret[:10],
                        role="Project Admin", permissions=[])
        m.OutboundPhoneNumber.create(project=project, phoneNumber=OUTBOUND, isDefault=True)
        root = m.CallMenu.create(project=project, name="Acme", routingPhoneNumber=routing_number(),
                                 outputMessage="Welcome to Acme.", state=root_state,
                                 afterHoursDeflection="voicemail", voicemailMaxSeconds=20,
                                 redirectionNumber=redirect_to)
        if redirect_to:  # a verified number of the project (anything else is never rung)
            owner = m.User.create(project=project, name="Front desk")
            m.UserIncomingCallNumber.create(project=project, user=owner, phoneNumber=redirect_to, isVerified=True)
        sales = m.CallMenu.create(project=project, name="Sales", parent=root, position=0,
                                  outputMessage="Connecting you to sales.", offerType=offer_type,
                                  cascadeGroupDelaySeconds=group_delay, maxWaitSeconds=max_wait,
                                  noAgentDeflection=no_agent, callbackDelaySeconds=callback_delay)
        callbacks = m.CallMenu.create(project=project, name="Callbacks", menuType="mobile_menu",
                                      offerType=offer_type, maxWaitSeconds=max_wait)
        if scenario:
            m.CallMenu.create(project=project, name="Support", parent=root, position=1,
                              incomingCallPolicy=scenario.policy)
        users = []
        for phone, group in agents:
            user = m.User.create(project=project, name=f"Agent {phone.port}", email=f"a{uuid.uuid4().hex[:8]}@x.io",
                                 isAgent=True)
            m.UserIncomingCallNumber.create(project=project, user=user, sipUri=phone.uri(), isVerified=True)
            m.CallMenuAgent.create(project=project, callMenu=sales, user=user, groupNumber=group)
            m.CallMenuAgent.create(project=project, callMenu=callbacks, user=user, groupNumber=group)
            users.append(user)
        desk = Desk(hotline, project, secret, users[0] if users else None)
        desk.sales, desk.callbacks = sales, callbacks
        return desk, root, users

    desk, root, users = await hotline.db.run(build)
    return desk, root, users, scenario


async def final_inbound(desk: Desk, timeout: float = 40.0, kind: str | None = None) -> dict:
    """The call object (the project's newest, of ``kind`` if given) once the call is over and its actor gone."""
    deadline = time.monotonic() + timeout
    ended = {"finished", "failed", "deflected", "voicemail_received", "voicemail_read"}
    while True:
        C = m.ContactCenterCall
        calls = await desk.hotline.db.list(C.select().where(
            C.project == desk.project.id, C.callType == kind if kind else True).order_by(C.createdAt.desc()).limit(1))
        call = calls[0] if calls else None
        service = desk.hotline.runner.app[CONTACT_CENTER]
        if call is not None and call.status in ended and str(call.id) not in service.actors \
                and str(call.id) not in service.running_elsewhere:
            status, body = await desk.request("GET", f"/{call.numericId}")
            assert status == 200, body
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"the call did not end within {timeout} s: {call and call.status}")
        await asyncio.sleep(0.1)


async def test_a_menu_walk_reaches_a_queue_answered_by_the_second_of_two_agents(hotline, sip_target):
    silent = Phone.answer_silent()                             # answers, never presses 1 (a voicemail box)
    accepting = Phone.answer_and_press("1", delay=1.0, ring=1.0)
    async with silent, accepting:
        desk, root, users, _ = await build_tree(hotline, [(silent, 1), (accepting, 1)])
        caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550142",
                        steps=((1.5, "1"),), hangup_after=8)
        async with caller:
            call = await final_inbound(desk)
            result = await caller.wait(10)
    assert result.call.answered and result.call.hung_up_by == "local"
    assert silent.result().call.answered and accepting.result().call.answered
    assert call["status"] == "finished" and call["call_type"] == "Voice Inbound (IVR)"
    assert call["agent_info"]["id"] == users[1].numericId
    assert call["disconnected_by"] == "disconnected_by_end_user"
    assert call["offer_type"] == "multicast" and [e["group"] for e in call["offer_events"]] == ["Group 1"]
    assert call["selected_menu"]["name"] == "Sales"
    assert call["menu_path"]["materialized_path"].count("/") == 1 and call["menu_path"]["items_count"] == 2
    assert call["call_duration"] >= 2 and call["wait_duration"] >= 1
    parts = {p["type"]: p for p in call["participants"]}
    assert parts["agent"]["status"] == "finished" and parts["end_user"]["status"] == "finished"


def invite_time(phone: Phone) -> float:
    return next(t for t, name, _ in phone.result().call.events if name == "invite")


async def test_cascade_rings_group_2_only_after_the_group_delay(hotline, sip_target):
    first = Phone.never_answer()
    second = Phone.answer_and_press("1", delay=1.0)
    async with first, second:
        desk, root, users, _ = await build_tree(hotline, [(first, 1), (second, 2)], offer_type="cascade",
                                                group_delay=3)
        caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550143",
                        steps=((1.5, "1"),), hangup_after=10)
        async with caller:
            call = await final_inbound(desk)
    first_invite, second_invite = invite_time(first), invite_time(second)
    assert second_invite - first_invite >= 2.8
    assert call["status"] == "finished" and call["agent_info"]["id"] == users[1].numericId
    assert [e["group"] for e in call["offer_events"]] == ["Group 1", "Group 2"]
    assert first.result().call.canceled  # group 1's phone stopped ringing when group 2 took the call


async def test_a_leaf_hands_the_call_to_its_incoming_call_policy(hotline, sip_target):
    oncall = Phone.answer_and_press("1", delay=1.0)
    async with oncall:
        desk, root, _, scenario = await build_tree(hotline, [], policy_phone=oncall)
        caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550144",
                        steps=((1.5, "2"),), hangup_after=6)
        async with caller:
            log = await hotline.final_log(scenario, timeout=30)
            call = await final_inbound(desk)
    assert log.status == "Completed" and log.answeredByUserId == scenario.user_of(oncall).id
    db_call = await desk.last_call()
    assert str(db_call.incomingCallLogId) == str(log.id)
    assert call["status"] == "finished" and call["selected_menu"]["name"] == "Support"
    assert call["incoming_call_log_id"] == str(log.id)


@pytest.fixture
async def hotline_with_webhook(lab, hotline_config, tmp_path, receiver):
    config = hotline_config.replace(contact_center__voicemail_max_silence=3.0,
                                    contact_center__recordings_dir=str(tmp_path / "recordings"),
                                    notify__webhook_url=receiver.url, notify__webhook_secret=WEBHOOK_SECRET,
                                    api__rate_limit=0)
    async with running_hotline(ContactCenterHotline, config) as running:
        yield running


WEBHOOK_SECRET = "voicemail-webhook-secret"


async def test_after_hours_the_caller_leaves_a_voicemail_that_is_recorded(hotline_with_webhook, sip_target,
                                                                           receiver):
    import json

    from ivr.shells.notify import signature_is_valid

    hotline = hotline_with_webhook
    desk, root, _, _ = await build_tree(hotline, [], root_state="after_hours")
    caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550145",
                    steps=((7.0, "speak"),), hangup_after=6)
    async with caller:
        call = await final_inbound(desk)
    assert call["status"] == "voicemail_received", call
    assert call["deflection"] == "voicemail" and call["voicemail_reason"] == "after_hours"
    assert call["recording_url"]
    db_call = await desk.last_call()
    path = hotline.config.recordings_dir / db_call.recordingFile
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getnframes() / wav.getframerate() >= 1.0
    # Listening to it marks it read.
    status, body = await desk.request("GET", f"/{db_call.numericId}/recording", raw=True)
    assert status == 200 and wave.open(io.BytesIO(body)).getnframes() > 0
    status, after = await desk.request("GET", f"/{db_call.numericId}")
    assert after["status"] == "voicemail_read"
    # The alert: a signed webhook naming the call and where its recording is.
    [(body, headers)] = await receiver.wait(1)
    alert = json.loads(body)
    assert alert["event"] == "contact-center.voicemail" and alert["callId"] == db_call.numericId
    assert alert["recordingUrl"] == f"/apps/api/v1/calls/{db_call.numericId}/recording"
    assert alert["voicemailReason"] == "after_hours" and alert["endUserNumber"] == "+14155550145"
    assert signature_is_valid(WEBHOOK_SECRET, body, headers["X-Hotline-Signature"])


async def test_an_inbound_call_of_the_api_calls_the_end_user_and_queues_them(hotline, carrier_port):
    agent = Phone.answer_and_press("1", delay=1.0)
    end_user = Phone.answer(port=carrier_port, hold=6.0, max_wait=30)
    async with agent, end_user:
        desk, _, users, _ = await build_tree(hotline, [(agent, 1)])
        status, body = await desk.request("POST", "", {
            "call_type": "Voice Inbound (API)", "menu_id": desk.sales.numericId, "lang": "en",
            "end_user_number": "+1 859-657-9625"})
        assert status == 201 and body["status"] == "queued", body
        call = await final_inbound(desk)
    received = end_user.result().call
    assert received.dialed.endswith("18596579625") and OUTBOUND[1:] in received.remote
    assert call["status"] == "finished" and call["agent_info"]["id"] == users[0].numericId
    assert call["disconnected_by"] == "disconnected_by_end_user"
    assert {p["type"]: p["status"] for p in call["participants"]} == {"agent": "finished", "end_user": "finished"}


async def test_a_scheduled_call_fires_at_its_time_and_reaches_an_agent(hotline, carrier_port):
    import datetime as dt

    agent = Phone.answer_and_press("1", delay=1.0)
    end_user = Phone.answer(port=carrier_port, hold=4.0, max_wait=30)
    async with agent, end_user:
        desk, _, users, _ = await build_tree(hotline, [(agent, 1)])
        at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
        status, body = await desk.request("POST", "", {
            "call_type": "Voice Scheduled (API)", "menu_id": desk.callbacks.numericId, "lang": "en",
            "end_user_number": "+1 859-657-9625", "scheduled_at": at.isoformat().replace("+00:00", "Z")})
        assert status == 201 and body["status"] == "scheduled", body
        call = await final_inbound(desk, timeout=40)
    invited = next(t for t, name, _ in end_user.result().call.events if name == "invite")
    assert 0 <= invited - at.timestamp() < 2.5   # fired within 1 s, then the INVITE through the trunk
    assert call["status"] == "finished" and call["call_type"] == "Voice Scheduled (API)"
    assert call["agent_info"]["id"] == users[0].numericId


async def test_a_caller_no_agent_can_take_is_called_back_later_and_reaches_an_agent(hotline, sip_target, carrier_port):
    desk, root, _, _ = await build_tree(hotline, [], no_agent="scheduled_call", callback_delay=8)
    agent = Phone.answer_and_press("1", delay=1.0)
    callback_phone = Phone.answer(port=carrier_port, hold=4.0, max_wait=60)
    caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550146", steps=((1.5, "1"),),
                    hangup_after=12)
    async with agent, callback_phone, caller:
        first = await final_inbound(desk, kind="Voice Inbound (IVR)")
        assert first["status"] == "deflected" and first["deflection"] == "scheduled_call", first["fail_details"]

        def add_agent():  # an agent is free now, before the call-back fires
            user = m.User.create(project=desk.project, name="Late agent", email=f"l{uuid.uuid4().hex[:8]}@x.io",
                                 isAgent=True)
            m.UserIncomingCallNumber.create(project=desk.project, user=user, sipUri=agent.uri(), isVerified=True)
            m.CallMenuAgent.create(project=desk.project, callMenu=desk.sales, user=user)
            return user

        user = await hotline.db.run(add_agent)
        # The call-back rings the caller's number (through the trunk), then queues them.
        second = await final_inbound(desk, kind="Voice Scheduled (API)", timeout=40)
    assert caller.result().call.hung_up_by == "remote"   # told when they will be called back, then goodbye
    assert second["parent_id"] == first["id"] and second["status"] == "finished"
    assert second["agent_info"]["id"] == user.numericId
    assert callback_phone.result().call.dialed.endswith("14155550146")


async def test_manual_redirection_forwards_the_caller_to_the_verified_number(hotline, sip_target, carrier_port):
    desk, root, _, _ = await build_tree(hotline, [], root_state="manual_redirection", redirect_to="+14155550177")
    front_desk = Phone.answer(port=carrier_port, max_wait=30)
    caller = Caller(root.routingPhoneNumber, sip_target, caller_id="+14155550147", hangup_after=5)
    async with front_desk, caller:
        call = await final_inbound(desk)
    received = front_desk.result().call
    assert received.answered and received.dialed.endswith("14155550177") and received.hung_up_by == "remote"
    assert call["status"] == "deflected" and call["deflection"] == "redirection"
    assert call["connected_at"] and call["call_duration"] >= 2
    assert call["disconnected_by"] == "disconnected_by_end_user"
