"""/api/project-call-sms-config: a project's own Twilio account. The auth token is write-only (never in a
read, a list, a relation, a create's answer or an error) and encrypted in the database."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from api.app import create_app
from ivr.config import load_config
from ivr.store.db import open_database
from ivr.store.models import ProjectCallSMSConfig
from tests.api.conftest import TWILIO_ENCRYPTION_KEY, ApiClient
from tests.api.factories import account_sid, unique_phone

TOKEN = "0123456789abcdef0123456789abcdef"
PATH = "/api/project-call-sms-config"


def config_data(**changes) -> dict:
    return {"name": "Own account", "description": "Ours", "twilioAccountSID": account_sid(),
            "twilioAuthToken": TOKEN, "twilioPrimaryPhoneNumber": unique_phone(), **changes}


def never_shows(payload, *secrets_: str, field: bool = True) -> None:
    """Neither the secrets nor (``field``: a row, not an error naming it) the token's field."""
    text = json.dumps(payload)
    if field:
        assert "twilioAuthToken" not in text
    for secret in secrets_:
        assert secret not in text


async def raw_token(api, config_id: str) -> str:
    """The column as the database holds it."""
    Cfg = ProjectCallSMSConfig
    return await api.db.run(lambda: Cfg.select(Cfg.twilioAuthToken).where(Cfg.id == config_id).scalar())


async def test_token_is_write_only_and_encrypted(api, acme):
    data = config_data(twilioPrimaryPhoneNumber="(415) 555-0142")
    created = await api.create("project-call-sms-config", acme.owner, data)
    never_shows(created, TOKEN)
    assert created["twilioPrimaryPhoneNumber"] == "+14155550142"   # E.164, like every phone field
    assert created["twilioAccountSID"] == data["twilioAccountSID"]
    assert created["projectId"] == acme.project_id
    stored = await raw_token(api, created["_id"])
    assert TOKEN not in stored
    assert Fernet(TWILIO_ENCRYPTION_KEY).decrypt(stored.encode()).decode() == TOKEN

    # Not in get-item, get-list, count queries, select, sort, nor through the policy's relation.
    item = await api.post(f"{PATH}/{created['_id']}/get-item", acme.owner,
                          {"select": {"name": True, "twilioAccountSID": True}})
    never_shows(item, TOKEN, stored)
    listed = await api.post(f"{PATH}/get-list", acme.owner, {"select": {"name": True}})
    never_shows(listed, TOKEN, stored)
    for body in ({"select": {"twilioAuthToken": True}}, {"query": {"twilioAuthToken": TOKEN}},
                 {"sort": {"twilioAuthToken": 1}}):
        status, payload = await api.call("POST", f"{PATH}/get-list", acme.owner, body, expect=None)
        assert status == 400 and "unknown field 'twilioAuthToken'" in payload["error"]
        never_shows(payload, TOKEN, stored, field=False)
    policy = await api.create("incoming-call-policy", acme.owner,
                              {"name": "Uses its own", "projectCallSMSConfigId": created["_id"]})
    expanded = await api.post(f"/api/incoming-call-policy/{policy['_id']}/get-item", acme.owner,
                              {"select": {"projectCallSMSConfig": True}})
    assert expanded["projectCallSMSConfig"]["_id"] == created["_id"]
    never_shows(expanded, TOKEN, stored)
    document = await api.call("GET", "/api/openapi.json")
    shown = document["components"]["schemas"]["ProjectCallSMSConfig"]["properties"]
    assert "twilioAuthToken" not in shown and "twilioAccountSID" in shown
    create_body = document["paths"][PATH]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "twilioAuthToken" in create_body["properties"]["data"]["required"]

    # A new token replaces the old one, encrypted; other updates keep it.
    await api.call("PUT", f"{PATH}/{created['_id']}", acme.owner, {"data": {"twilioAuthToken": "f" * 32}})
    assert Fernet(TWILIO_ENCRYPTION_KEY).decrypt((await raw_token(api, created["_id"])).encode()) == b"f" * 32
    await api.call("PUT", f"{PATH}/{created['_id']}", acme.owner, {"data": {"name": "Renamed"}})
    assert Fernet(TWILIO_ENCRYPTION_KEY).decrypt((await raw_token(api, created["_id"])).encode()) == b"f" * 32


@pytest.mark.parametrize(("change", "message"), [
    ({"twilioAccountSID": "SK0123"}, "data.twilioAccountSID: not a Twilio account SID"),
    ({"twilioPrimaryPhoneNumber": "not a number"}, "data.twilioPrimaryPhoneNumber"),
    ({"twilioAuthToken": "   "}, "data.twilioAuthToken: must not be empty"),
    ({"twilioAuthToken": "a token with spaces"}, "data.twilioAuthToken: not a Twilio auth token"),
    ({"twilioAuthToken": 12345}, "data.twilioAuthToken: must be a string"),
    ({"twilioAuthToken": None}, "data.twilioAuthToken: must not be null"),
    ({"name": ""}, "data.name: must not be empty"),
])
async def test_bad_input_is_400_without_the_token(api, acme, change, message):
    status, payload = await api.call("POST", PATH, acme.owner, {"data": config_data(**change)}, expect=None)
    assert status == 400 and message in payload["error"], payload
    never_shows(payload, TOKEN, "a token with spaces", field=False)


async def test_required_fields(api, acme):
    data = config_data()
    del data["twilioAuthToken"]
    status, payload = await api.call("POST", PATH, acme.owner, {"data": data}, expect=None)
    assert status == 400 and payload["error"] == "data: missing required field twilioAuthToken"


async def test_storing_a_token_without_a_key_says_to_set_one(database_url, aiohttp_client, tmp_path):
    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "0"})
    db = open_database(database_url, pool_size=2)
    client = await aiohttp_client(create_app(config, db=db))
    try:
        api = ApiClient(client, db)
        tenant = await api.tenant("No key", roles=("owner",))
        status, payload = await api.call("POST", PATH, tenant.owner, {"data": config_data()}, expect=None)
        assert status == 400
        assert "twilio.encryption_key" in payload["error"] and "HOTLINE_TWILIO_ENCRYPTION_KEY" in payload["error"]
        assert "hotline twilio key" in payload["error"]
        never_shows(payload, TOKEN, field=False)
        assert await api.post(f"{PATH}/count", tenant.owner, {}) == {"count": 0}
    finally:
        await client.close()
        await db.close_pool()


async def test_a_policy_references_a_config_of_its_own_project(api, acme):
    other = await api.tenant("Other", roles=("owner",))
    theirs = await api.create("project-call-sms-config", other.owner, config_data())
    ours = await api.create("project-call-sms-config", acme.owner, config_data())
    status, payload = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                     {"data": {"name": "Borrower", "projectCallSMSConfigId": theirs["_id"]}},
                                     expect=None)
    assert status == 400
    assert payload["error"] == (f"data.projectCallSMSConfigId: no Project Call SMS Config with id {theirs['_id']} "
                                "in your project")
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Owner"})
    status, payload = await api.call("PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner,
                                     {"data": {"projectCallSMSConfigId": theirs["_id"]}}, expect=None)
    assert status == 400
    await api.call("PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner,
                   {"data": {"projectCallSMSConfigId": ours["_id"]}})
    # A config a policy uses cannot be deleted; once the policy lets go, it can.
    status, payload = await api.call("DELETE", f"{PATH}/{ours['_id']}", acme.owner, expect=None)
    assert status == 409 and "'Owner'" in payload["error"]
    await api.call("PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner,
                   {"data": {"projectCallSMSConfigId": None}})
    await api.call("DELETE", f"{PATH}/{ours['_id']}", acme.owner)
    assert await api.post(f"{PATH}/count", acme.owner, {}) == {"count": 0}
