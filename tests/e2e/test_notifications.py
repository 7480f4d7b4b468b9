"""Notification calls through the real Asterisk: ``POST /api/call-log/send`` -> AMI Originate -> the
FastAGI route ``notification`` -> a sipp phone; the Call Log row, the webhook, verification codes, and
AMI surviving an Asterisk restart (idle, and during a call)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from api.auth import hash_key, new_key
from ivr.core.phone import to_e164
from ivr.core.notification import ACKNOWLEDGED, GOODBYE, VERIFICATION_AGAIN, VERIFICATION_INTRO, VERIFICATION_PROMPT
from ivr.store import models as m
from ivr.store import verification
from ivr.shells.notify import signature_is_valid
from tests.e2e.conftest import running_hotline
from tests.e2e.dialplan_hotline import DialplanHotline
from tests.e2e.hotline import routing_number
from tests.sip.parties import Phone

pytestmark = pytest.mark.e2e

SECRET = "webhook-secret-for-tests"
RATES = {"sip:": 2, "1": 3}
INCIDENT = "0f8fad5b-d9cb-469f-a165-70867728950e"


class Receiver:
    """A webhook receiver on loopback that checks nothing itself: it keeps what it got."""

    def __init__(self):
        self.got: list[tuple[bytes, dict]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "Receiver":
        async def hook(request: web.Request) -> web.Response:
            self.got.append((await request.read(), dict(request.headers)))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hotline", hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hotline"
        return self

    async def wait(self, count: int = 1, timeout: float = 10.0) -> list[tuple[bytes, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            assert time.monotonic() < deadline, f"the webhook received {len(self.got)} request(s)"
            await asyncio.sleep(0.05)
        return self.got


@pytest.fixture
async def hotline(lab, hotline_config, receiver):
    """Hotline's dialplan services and the REST API (no ARI controller), short timeouts for tests."""
    config = hotline_config.replace(notify__ring_timeout=3.0, notify__digit_timeout=1.0, notify__max_prompts=1,
                                    notify__rates=RATES, notify__webhook_url=receiver.url,
                                    notify__webhook_secret=SECRET, notify__verification_calls=False,
                                    api__rate_limit=0)
    async with running_hotline(lambda config, db: DialplanHotline(config, db, api=True), config) as running:
        yield running


#: key -> (project id, the project's routing number: a caller ID it may use)
PROJECTS: dict[str, tuple] = {}


@pytest.fixture
async def key(hotline) -> str:
    def make() -> str:
        project = m.Project.create(name="notifications")
        policy = m.IncomingCallPolicy.create(project=project, name="Desk", slug=f"desk-{uuid.uuid4().hex}",
                                             routingPhoneNumber=routing_number())
        secret = new_key()
        m.ApiKey.create(project=project, name="e2e", keyHash=hash_key(secret), keyPrefix=secret[:10],
                        role="Project Member", permissions=[])
        PROJECTS[secret] = (project.id, policy.routingPhoneNumber)
        return secret

    return await hotline.db.run(make)


def make_verified(project_id, address: str) -> None:
    """Only verified numbers of the project are called: make ``address`` one."""
    sip = address.startswith("sip:")
    address = address if sip else to_e164(address)
    Number = m.UserIncomingCallNumber
    column = Number.sipUri if sip else Number.phoneNumber
    if Number.select().where(Number.project == project_id, column == address).exists():
        return
    user = m.User.create(project=project_id, name=f"On call {address}")
    Number.create(project=project_id, user=user, isVerified=True, **{"sipUri" if sip else "phoneNumber": address})


async def send(hotline, key: str, body: dict) -> dict:
    await hotline.db.run(make_verified, PROJECTS[key][0], body["toNumber"])
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hotline.base_url}/api/call-log/send", json=body, headers={"ApiKey": key}) as resp:
            payload = await resp.json()
            assert resp.status == 200, payload
            return payload


async def outcome(hotline, key: str, call_log_id: str, timeout: float = 20.0) -> dict:
    """The row through the API, once its status is known."""
    select = {name: True for name in ("status", "statusMessage", "callData", "callCostInUSDCents", "toNumber",
                                      "fromNumber", "incidentId")}
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.post(f"{hotline.base_url}/api/call-log/{call_log_id}/get-item",
                                    json={"select": select}, headers={"ApiKey": key}) as resp:
                row = await resp.json()
            if row.get("status") is not None:
                return row
            assert time.monotonic() < deadline, f"no outcome within {timeout} s: {row}"
            await asyncio.sleep(0.1)


async def test_answered_and_acknowledged_with_1(hotline, key, receiver):
    phone = Phone.answer_and_press("1", delay=1.0)
    async with phone:
        sent = await send(hotline, key, {"toNumber": phone.uri(), "message": "Incident 42 is critical.",
                                         "fromNumber": PROJECTS[key][1], "incidentId": INCIDENT})
        assert sent["status"] is None
        row = await outcome(hotline, key, sent["_id"])
        result = await phone.wait(10)
    assert (row["status"], row["statusMessage"]) == ("Success", "Answered; the message was heard and acknowledged "
                                                                "(key 1).")
    data = row["callData"]
    assert data["message"] == "Incident 42 is critical." and data["incidentId"] == INCIDENT
    assert (data["keyPressed"], data["acknowledged"], data["answered"]) == ("1", True, True)
    assert 1 <= data["durationInSeconds"] < 10
    assert row["callCostInUSDCents"] == 2                         # sip: at 2 cents a minute, 1 started minute
    assert result.answered and result.digits == "1" and result.hung_up_by == "remote"
    assert result.call.caller_number == PROJECTS[key][1]          # the caller ID shown: the project's number
    [(body, headers)] = await receiver.wait(1)
    assert signature_is_valid(SECRET, body, headers["X-Hotline-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "call-log.acknowledged" and payload["callLogId"] == sent["_id"]
    assert (payload["keyPressed"], payload["incidentId"], payload["toNumber"]) == ("1", INCIDENT, phone.uri())
    assert hotline.metrics.notifications.labels("Success")._value.get() >= 1


async def test_not_answered_is_a_missed_call(hotline, key, receiver):
    phone = Phone.never_answer()
    async with phone:
        sent = await send(hotline, key, {"toNumber": phone.uri(), "message": "Disk full."})
        row = await outcome(hotline, key, sent["_id"])
        result = await phone.wait(5)
    assert (row["status"], row["statusMessage"]) == ("Missed Call", "Not answered within 3 s")
    assert row["callCostInUSDCents"] == 0 and row["callData"]["hangupCause"] == 19
    assert result.canceled and not result.answered
    assert receiver.got == []


@pytest.mark.parametrize(("reply", "status", "message"), [
    (486, "Busy", "Line busy: User busy (cause 17)"),
    (603, "Missed Call", "Declined: Call Rejected (cause 21)"),
])
async def test_busy_and_declined(hotline, key, reply, status, message):
    phone = Phone.busy(reply)
    async with phone:
        sent = await send(hotline, key, {"toNumber": phone.uri(), "message": "Disk full."})
        row = await outcome(hotline, key, sent["_id"])
    assert (row["status"], row["statusMessage"], row["callCostInUSDCents"]) == (status, message, 0)


async def test_a_phone_number_is_called_through_the_outbound_trunk(hotline, key, carrier_port):
    carrier = Phone.answer_and_press("1", delay=1.0, port=carrier_port)
    async with carrier:
        sent = await send(hotline, key, {"toNumber": "+1 415 555 2671", "message": "Database down."})
        row = await outcome(hotline, key, sent["_id"])
        result = await carrier.wait(10)
    assert row["toNumber"] == "+14155552671" and row["status"] == "Success"
    assert row["callCostInUSDCents"] == 3                         # +1 at 3 cents a minute
    assert result.call.dialed == "+14155552671"


async def test_a_verification_code_is_delivered_by_a_call(hotline, lab, monkeypatch):
    """The code is said with SAY DIGITS (Asterisk's digit recordings): the call succeeds only if both
    readings played to their end, and the only prompts it synthesizes are its texts without the code."""
    phone = Phone.answer_silent()
    tts = hotline.notifier.tts
    synthesized: list[str] = []
    media = tts.media

    async def spy(text: str) -> str:
        synthesized.append(text)
        return await media(text)

    monkeypatch.setattr(tts, "media", spy)

    def setup():
        project = m.Project.create(name="verify")
        user = m.User.create(project=project, name="Vera")
        number = m.UserIncomingCallNumber.create(project=project, user=user, sipUri=phone.uri())
        return number.id, verification.issue_code(number)

    async with phone:
        number_id, code = await hotline.db.run(setup)
        assert await hotline.notifier.deliver_codes() == 1
        assert await hotline.notifier.deliver_codes() == 0        # not twice while it is being called

        def row():
            return m.CallLog.get_or_none(m.CallLog.toNumber == phone.uri())

        deadline = time.monotonic() + 30
        while (log := await hotline.db.run(row)) is None or log.status is None:
            assert time.monotonic() < deadline, "the verification call did not end"
            await asyncio.sleep(0.2)
        result = await phone.wait(10)
        pending = await hotline.db.run(lambda: verification.pending_code(
            m.UserIncomingCallNumber.get_by_id(number_id)))
    assert (log.status, log.statusMessage) == ("Success", "Answered; the verification code was read out.")
    assert code not in json.dumps(log.callData) and log.callData["kind"] == "verification"
    assert log.callData["message"] == "Your Hotline verification code is ******"
    assert log.callData["durationInSeconds"] >= 4          # twelve digits were said, not skipped
    assert pending.code is None and "already delivered" in pending.reason
    assert result.answered and result.hung_up_by == "remote"
    # No prompt holds the code: the call synthesized (and cached) only its fixed texts.
    assert synthesized == [VERIFICATION_INTRO, VERIFICATION_AGAIN, VERIFICATION_PROMPT, ACKNOWLEDGED, GOODBYE]
    digits = ", ".join(code)
    old_prompt = tts.name_for(f"Your Hotline verification code is {digits}. Again: {digits}.")
    assert not (Path(tts.cache_dir) / f"{old_prompt}.wav").exists()     # the prompt earlier versions made
    messages = lab.log_dir / "messages.log"
    if messages.exists():                                   # Asterisk found every digit's recording
        assert "digits/" not in messages.read_text(errors="replace")


# -- AMI through Asterisk restarts -------------------------------------------------------------


async def test_ami_survives_an_asterisk_restart_while_idle(hotline, key, lab):
    before = hotline.ami.connections
    lab.down()
    lab.up(test_routes=True)
    await hotline.wait_ami_reconnected(before)
    phone = Phone.answer_and_press("1", delay=1.0)
    async with phone:
        sent = await send(hotline, key, {"toNumber": phone.uri(), "message": "Back online."})
        assert (await outcome(hotline, key, sent["_id"]))["status"] == "Success"


async def test_ami_survives_asterisk_dying_during_a_call_and_nothing_is_sent_twice(hotline, key, lab):
    phone = Phone.answer_silent(hold=15)
    async with phone:
        sent = await send(hotline, key, {"toNumber": phone.uri(), "message": "A long message. " * 5})
        await phone.wait_for("answered", timeout=10)
        call = hotline.notifier.calls[sent["_id"]]
        await asyncio.wait_for(call.agi_started.wait(), 5)
        before = hotline.ami.connections
        os.kill(lab.pid, signal.SIGKILL)            # Asterisk crashes with the call
        lab.down()
        lab.up(test_routes=True)
        row = await outcome(hotline, key, sent["_id"])
        await hotline.wait_ami_reconnected(before)
        await asyncio.sleep(0.5)
        calls = phone.result().calls
    assert row["status"] == "Error" and "lost" in row["statusMessage"], row
    assert len(calls) == 1                          # the Originate was not sent again after the reconnect
    again = Phone.answer_and_press("1", delay=1.0)
    async with again:
        sent = await send(hotline, key, {"toNumber": again.uri(), "message": "Back online."})
        assert (await outcome(hotline, key, sent["_id"]))["status"] == "Success"


async def test_doctor_and_readiness_against_the_lab(hotline):
    from ivr.cli.doctor import OK, WARN, run_checks

    checks = {check.name: check for check in await run_checks(hotline.config)}
    assert {name: check.status for name, check in checks.items()} == {
        "database": OK, "ari": OK, "controller": WARN, "sip trunk": OK, "ami": OK, "dialplan": OK,
        "fastagi": OK, "tts": OK, "sip": OK}, checks
    assert "no call controller is connected" in checks["controller"].detail
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hotline.base_url}/api/ready") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body == {"status": "ready", "checks": {"database": {"ok": True}, "ami": {"ok": True}, "agi": {"ok": True}}}
