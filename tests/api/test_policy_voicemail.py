"""An Incoming Call Policy's voicemail after NoAnswer through the API: the policy's two fields (checked),
the log's voicemail served to its project only (``GET /api/incoming-call-log/:id/voicemail``), and the
route in the OpenAPI document."""

from __future__ import annotations

import uuid

import pytest

from ivr.store.models import IncomingCallLog

WAV = b"RIFF$\x00\x00\x00WAVEfmt " + b"\x00" * 40


async def policy(api, key, **fields) -> dict:
    return await api.create("incoming-call-policy", key, {"name": f"Line {uuid.uuid4().hex[:6]}", **fields})


async def test_a_policy_takes_voicemail_only_when_asked_and_keeps_its_length(api):
    acme = await api.tenant()
    plain = await policy(api, acme.owner)
    row = await api.post(f"/api/incoming-call-policy/{plain['_id']}/get-item", acme.owner,
                         {"select": {"voicemailOnNoAnswer": True, "voicemailMaxSeconds": True}})
    assert (row["voicemailOnNoAnswer"], row["voicemailMaxSeconds"]) == (False, 120)
    taking = await policy(api, acme.owner, voicemailOnNoAnswer=True, voicemailMaxSeconds=600)
    await api.call("PUT", f"/api/incoming-call-policy/{taking['_id']}", acme.owner,
                   {"data": {"voicemailMaxSeconds": 5}})
    row = await api.post(f"/api/incoming-call-policy/{taking['_id']}/get-item", acme.owner,
                         {"select": {"voicemailOnNoAnswer": True, "voicemailMaxSeconds": True}})
    assert (row["voicemailOnNoAnswer"], row["voicemailMaxSeconds"]) == (True, 5)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"voicemailMaxSeconds": 4}, "data.voicemailMaxSeconds: must be between 5 and 600 seconds"),
    ({"voicemailMaxSeconds": 601}, "data.voicemailMaxSeconds: must be between 5 and 600 seconds"),
    ({"voicemailMaxSeconds": "long"}, "voicemailMaxSeconds"),
    ({"voicemailOnNoAnswer": "maybe"}, "voicemailOnNoAnswer"),
])
async def test_voicemail_fields_out_of_range_are_refused(api, fields, problem):
    acme = await api.tenant()
    body = await api.create("incoming-call-policy", acme.owner, {"name": "Night", **fields}, expect=400)
    assert problem in body["error"]
    existing = await policy(api, acme.owner)
    body = await api.call("PUT", f"/api/incoming-call-policy/{existing['_id']}", acme.owner, {"data": fields},
                          expect=400)
    assert problem in body["error"]


async def fetch(api, log_id, key) -> tuple[int, bytes, str]:
    headers = {"ApiKey": key} if key else {}
    resp = await api.client.get(f"/api/incoming-call-log/{log_id}/voicemail", headers=headers)
    return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def test_a_voicemail_is_served_to_its_project_only_and_only_with_read_permission(api, config):
    acme, other = await api.tenant(), await api.tenant("Other")
    line = await policy(api, acme.owner, voicemailOnNoAnswer=True)
    log = await IncomingCallLog.acreate(project=acme.project_id, incomingCallPolicyId=line["_id"], status="NoAnswer")
    name = f"{acme.project_id}/policy-{log.id}.wav"
    (config.recordings_dir / acme.project_id).mkdir(parents=True, exist_ok=True)
    (config.recordings_dir / name).write_bytes(WAV)
    await IncomingCallLog.update(voicemailFile=name).where(IncomingCallLog.id == log.id).aexecute()

    status, body, kind = await fetch(api, log.id, acme.keys["viewer"])
    assert (status, body, kind) == (200, WAV, "audio/wav")
    reader = await api.key(acme.project_id, permissions=("Read Incoming Call Log",))
    assert (await fetch(api, log.id, reader))[0] == 200
    # No key, a bad key, a key without the permission, another project's key.
    assert (await fetch(api, log.id, None))[0] == 401
    assert (await fetch(api, log.id, "not-a-key"))[0] == 401
    policies_only = await api.key(acme.project_id, permissions=("Read Incoming Call Policy",))
    status, body, _ = await fetch(api, log.id, policies_only)
    assert status == 403 and b"Read Incoming Call Log" in body
    assert (await fetch(api, log.id, other.owner))[0] == 404


async def test_no_voicemail_is_a_404_and_never_a_file_outside_the_recordings_directory(api, config, tmp_path):
    acme = await api.tenant()
    line = await policy(api, acme.owner)
    none = await IncomingCallLog.acreate(project=acme.project_id, incomingCallPolicyId=line["_id"], status="NoAnswer")
    for log_id in (none.id, uuid.uuid4(), "not-an-id"):
        status, body, _ = await fetch(api, log_id, acme.owner)
        assert status == 404 and b"error" in body, (log_id, body)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(WAV)
    config.recordings_dir.mkdir(parents=True, exist_ok=True)
    for name in (str(secret), "../secret.wav", f"{acme.project_id}/gone.wav", "."):
        log = await IncomingCallLog.acreate(project=acme.project_id, incomingCallPolicyId=line["_id"],
                                            status="NoAnswer", voicemailFile=name)
        assert (await fetch(api, log.id, acme.owner))[0] == 404, name


async def test_the_voicemail_route_and_fields_are_in_the_openapi_document(api):
    doc = await api.call("GET", "/api/openapi.json")
    operation = doc["paths"]["/api/incoming-call-log/{id}/voicemail"]["get"]
    assert "audio/wav" in operation["responses"]["200"]["content"]
    assert {"401", "403", "404"} <= set(operation["responses"])
    schemas = doc["components"]["schemas"]
    policy_schema = next(s for name, s in schemas.items() if name.startswith("IncomingCallPolicy")
                         and "voicemailOnNoAnswer" in s.get("properties", {}))
    assert "voicemailMaxSeconds" in policy_schema["properties"]
    assert any("voicemailFile" in s.get("properties", {}) for name, s in schemas.items()
               if name.startswith("IncomingCallLog"))
