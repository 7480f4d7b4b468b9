"""An Incoming Call Policy's voicemail after NoAnswer, over the real Asterisk: nobody answers the one
rule's phone, the sipp caller hears the no-answer message and the prompt, speaks after the beep and
hangs up; the log stays NoAnswer and keeps the recording, which the API serves, and the signed webhook
announces it."""

from __future__ import annotations

import io
import json
import wave

import aiohttp
import pytest

from api.auth import hash_key, new_key
from ivr.shells.notify import signature_is_valid
from ivr.store import models as m
from tests.e2e.conftest import running_hotline
from tests.e2e.hotline import Target
from tests.e2e.test_contact_center_calls import ContactCenterHotline
from tests.sip.parties import Caller, Phone

pytestmark = pytest.mark.e2e
WEBHOOK_SECRET = "policy-voicemail-secret"


@pytest.fixture
async def hotline(lab, hotline_config, tmp_path, receiver):
    config = hotline_config.replace(contact_center__voicemail_max_silence=5.0,
                                    contact_center__recordings_dir=str(tmp_path / "recordings"),
                                    notify__webhook_url=receiver.url, notify__webhook_secret=WEBHOOK_SECRET,
                                    api__rate_limit=0)
    async with running_hotline(ContactCenterHotline, config) as running:
        yield running


async def get(hotline, path: str, key: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hotline.base_url}{path}", headers={"ApiKey": key}) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def test_nobody_answers_and_the_caller_leaves_a_voicemail(hotline, sip_target, receiver):
    away = Phone.never_answer()
    async with away:
        scenario = await hotline.policy(Target([away], escalate_after=1), voicemailOnNoAnswer=True,
                                        voicemailMaxSeconds=30)
        # Answered at 0; rung 1 s; "Nobody answered." (about 1 s); the prompt (about 4 s); the beep.
        caller = Caller(scenario.number, sip_target, caller_id="+14155550177", steps=((8.0, "speak"),),
                        hangup_after=4)
        async with caller:
            log = await hotline.final_log(scenario, timeout=40)
            heard = await caller.wait(10)
    assert heard.answered, heard.describe()
    [item] = await hotline.items_of(log)
    assert (item.status, item.isAnswered) == ("NoAnswer", False)
    assert log.status == "NoAnswer" and log.answeredByUserId is None
    assert log.statusMessage == "No one answered: all 1 escalation rule was tried 1 time; the caller left a voicemail"
    assert log.voicemailFile == f"{scenario.policy.projectId}/policy-{log.id}.wav" and log.voicemailReceivedAt
    path = hotline.config.recordings_dir / log.voicemailFile
    assert path.stat().st_mode & 0o777 == 0o600
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getnframes() / wav.getframerate() >= 1.0

    # The API serves it to the log's project.
    def key_for(project_id) -> str:
        secret = new_key()
        m.ApiKey.create(project=project_id, name="e2e", keyHash=hash_key(secret), keyPrefix=secret[:10],
                        permissions=["Read Incoming Call Log"])
        return secret

    key = await hotline.db.run(key_for, scenario.policy.projectId)
    status, body, kind = await get(hotline, f"/api/incoming-call-log/{log.id}/voicemail", key)
    assert (status, kind) == (200, "audio/wav") and body == path.read_bytes()
    assert wave.open(io.BytesIO(body)).getnframes() > 0
    stranger = await hotline.db.run(lambda: key_for(m.Project.create(name="other").id))
    assert (await get(hotline, f"/api/incoming-call-log/{log.id}/voicemail", stranger))[0] == 404

    # The alert: signed, naming the log, the policy, the caller and where the voicemail is.
    [(raw, headers)] = await receiver.wait(1)
    alert = json.loads(raw)
    assert alert["event"] == "incoming-call-log.voicemail" and headers["X-Hotline-Event"] == alert["event"]
    assert alert["incomingCallLogId"] == str(log.id) and alert["projectId"] == str(scenario.policy.projectId)
    assert alert["policy"] == scenario.policy.name and alert["callerPhoneNumber"] == "+14155550177"
    assert alert["voicemailUrl"] == f"/api/incoming-call-log/{log.id}/voicemail"
    assert signature_is_valid(WEBHOOK_SECRET, raw, headers["X-Hotline-Signature"])
