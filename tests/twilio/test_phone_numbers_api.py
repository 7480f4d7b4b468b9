"""A policy's phone number provisioned at Twilio through the API (api/phone_numbers.py), end to end against
the REST stand-in, on both database backends."""

from __future__ import annotations

import secrets

import pytest

from api import phone_numbers
from api.app import create_app
from ivr.config import load_config
from ivr.store.db import open_database
from ivr.store.models import IncomingCallPolicy
from tests.api.conftest import TWILIO_ENCRYPTION_KEY, ApiClient
from tests.api.factories import unique_phone

PUBLIC = "https://hotline.example.com"
VOICE, STATUS = f"{PUBLIC}/twilio/voice", f"{PUBLIC}/twilio/status"


def _config(tmp_path, standin, account=None, **env):
    values = {"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "0",
              "HOTLINE_TWILIO_ENCRYPTION_KEY": TWILIO_ENCRYPTION_KEY,
              "HOTLINE_TWILIO_API_BASE_URL": standin.base_url, "HOTLINE_TWILIO_PUBLIC_URL": PUBLIC}
    if account is not None:
        values |= {"HOTLINE_TWILIO_ACCOUNT_SID": account.sid, "HOTLINE_TWILIO_AUTH_TOKEN": account.token,
                   "HOTLINE_TWILIO_FROM_NUMBER": "+14155550000"}
    return load_config(env={**values, **env})


@pytest.fixture
async def make_api(database_url, aiohttp_client):
    """An API app from a configuration (the database of this backend)."""
    opened = []

    async def make(config) -> ApiClient:
        db = open_database(database_url, pool_size=2)
        opened.append(db)
        return ApiClient(await aiohttp_client(create_app(config, db=db)), db)

    yield make
    for db in opened:
        await db.close_pool()


@pytest.fixture
def global_account(twilio_standin):
    account = twilio_standin.account()
    account.add_available("US", "415", [unique_phone() for _ in range(3)])
    return account


@pytest.fixture
async def api(make_api, tmp_path, twilio_standin, global_account):
    return await make_api(_config(tmp_path, twilio_standin, global_account))


async def policy(api, key, **data) -> str:
    return (await api.create("incoming-call-policy", key, {"name": "Front door", **data}))["_id"]


def base(policy_id: str) -> str:
    return f"/api/incoming-call-policy/{policy_id}/phone-number"


async def test_search_buy_list_assign_release(api, twilio_standin, global_account):
    tenant = await api.tenant("Provisioned", roles=("owner", "viewer"))
    pid = await policy(api, tenant.owner)
    offered = sorted(global_account.available[("US", "415")])
    found = await api.post(f"{base(pid)}/search", tenant.keys["viewer"], {"countryCode": "US", "areaCode": 415})
    assert found["count"] == 3 and sorted(n["phoneNumber"] for n in found["data"]) == offered
    assert set(found["data"][0]) == {"phoneNumber", "friendlyName", "locality", "region", "postalCode", "countryCode"}
    assert twilio_standin.requests[-1].query["AreaCode"] == "415"

    number = offered[0]
    bought = await api.post(f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": number})
    sid = bought["callProviderPhoneNumberId"]
    assert sid.startswith("PN") and bought["routingPhoneNumber"] == number
    assert (bought["phoneNumberCountryCode"], bought["phoneNumberAreaCode"]) == ("US", "415")
    assert bought["phoneNumberPurchasedAt"].endswith("Z")
    [buy] = twilio_standin.requests_to("POST", "/IncomingPhoneNumbers.json")
    assert buy.account_sid == global_account.sid
    assert buy.form == {"PhoneNumber": number, "VoiceUrl": VOICE, "VoiceMethod": "POST", "StatusCallback": STATUS,
                        "StatusCallbackMethod": "POST"}
    fields = {name: True for name in ("routingPhoneNumber", "callProviderPhoneNumberId", "phoneNumberCountryCode",
                                      "phoneNumberAreaCode", "phoneNumberPurchasedAt")}
    row = await api.post(f"/api/incoming-call-policy/{pid}/get-item", tenant.keys["viewer"], {"select": fields})
    assert row == {"_id": pid, **{k: bought[k] for k in fields}}

    # A second number for the same policy: release the first one first.
    status, payload = await api.call("POST", f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": offered[1]},
                                     expect=None)
    assert status == 409 and "release it first" in payload["error"]

    # The account's numbers: the one bought (routing to the policy) and one bought elsewhere.
    spare = global_account.add_owned(unique_phone(), voice_url="https://old.example.com/voice")
    listed = await api.call("GET", f"{base(pid)}/owned", tenant.keys["viewer"])
    by_sid = {n["phoneNumberId"]: n for n in listed["data"]}
    assert listed["count"] == 2 and set(by_sid) == {sid, spare["sid"]}
    assert by_sid[sid] == {"phoneNumberId": sid, "phoneNumber": number, "friendlyName": by_sid[sid]["friendlyName"],
                           "voiceUrl": VOICE, "statusCallback": STATUS, "incomingCallPolicyId": pid, "inUse": True}
    assert (by_sid[spare["sid"]]["incomingCallPolicyId"], by_sid[spare["sid"]]["inUse"]) == (None, False)

    # Release, twice: the number goes back to Twilio once, the fields are cleared.
    released = await api.post(f"{base(pid)}/release", tenant.owner, {})
    assert released == {"_id": pid, "routingPhoneNumber": None, "callProviderPhoneNumberId": None,
                        "phoneNumberCountryCode": None, "phoneNumberAreaCode": None, "phoneNumberPurchasedAt": None,
                        "released": True}
    assert global_account.released == [sid]
    again = await api.post(f"{base(pid)}/release", tenant.owner, {})
    assert again == {**released, "released": False}
    assert len(twilio_standin.requests_to("DELETE", f"/IncomingPhoneNumbers/{sid}.json")) == 1
    # A SID written into the policy by hand is released only if it is the policy's number at Twilio.
    mine, theirs = global_account.add_owned(unique_phone()), global_account.add_owned(unique_phone())
    await api.call("PUT", f"/api/incoming-call-policy/{pid}", tenant.owner, {
        "data": {"routingPhoneNumber": mine["phone_number"], "callProviderPhoneNumberId": theirs["sid"]}})
    status, payload = await api.call("POST", f"{base(pid)}/release", tenant.owner, {}, expect=None)
    assert status == 409 and "nothing was released" in payload["error"]
    assert theirs["sid"] in global_account.owned
    await api.call("PUT", f"/api/incoming-call-policy/{pid}", tenant.owner, {"data": {"routingPhoneNumber": None}})
    status, payload = await api.call("POST", f"{base(pid)}/release", tenant.owner, {}, expect=None)
    assert status == 400 and "no routingPhoneNumber" in payload["error"]
    await api.call("PUT", f"/api/incoming-call-policy/{pid}", tenant.owner, {
        "data": {"routingPhoneNumber": mine["phone_number"], "callProviderPhoneNumberId": mine["sid"]}})
    assert (await api.post(f"{base(pid)}/release", tenant.owner, {}))["released"] is True
    assert set(global_account.owned) == {spare["sid"], theirs["sid"]}

    # Assign the spare number (by its SID): its webhooks now point at Hotline.
    assigned = await api.post(f"{base(pid)}/assign", tenant.owner, {"phoneNumberId": spare["sid"]})
    assert (assigned["routingPhoneNumber"], assigned["callProviderPhoneNumberId"]) == \
        (spare["phone_number"], spare["sid"])
    assert assigned["phoneNumberPurchasedAt"] is None
    assert (global_account.owned[spare["sid"]]["voice_url"], global_account.owned[spare["sid"]]["status_callback"]) \
        == (VOICE, STATUS)
    # Twilio no longer has it (released elsewhere): releasing still clears the policy.
    del global_account.owned[spare["sid"]]
    gone = await api.post(f"{base(pid)}/release", tenant.owner, {})
    assert gone["released"] is False and gone["routingPhoneNumber"] is None
    # By number, a second policy.
    other = global_account.add_owned(unique_phone())
    pid2 = await policy(api, tenant.owner, name="Side door")
    by_number = await api.post(f"{base(pid2)}/assign", tenant.owner, {"phoneNumber": other["phone_number"]})
    assert by_number["callProviderPhoneNumberId"] == other["sid"]


async def test_a_project_config_is_used_instead_of_the_global_account(api, twilio_standin, global_account):
    own = twilio_standin.account()
    london = f"+44207{secrets.randbelow(10**7):07d}"  # the session's database is shared: a number of its own
    own.add_available("GB", "20", [london])
    tenant = await api.tenant("Own account", roles=("owner",))
    config = await api.create("project-call-sms-config", tenant.owner, {
        "name": "Ours", "twilioAccountSID": own.sid, "twilioAuthToken": own.token,
        "twilioPrimaryPhoneNumber": "+442071838751"})
    pid = await policy(api, tenant.owner, projectCallSMSConfigId=config["_id"])
    found = await api.post(f"{base(pid)}/search", tenant.owner, {"countryCode": "GB"})
    assert [n["phoneNumber"] for n in found["data"]] == [london]
    bought = await api.post(f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": london})
    assert bought["phoneNumberCountryCode"] == "GB" and bought["callProviderPhoneNumberId"] in own.owned
    assert {r.account_sid for r in twilio_standin.requests} == {own.sid}
    assert global_account.owned == {}


async def test_shared_account_numbers_of_other_projects_stay_unseen(api, twilio_standin, global_account):
    a = await api.tenant("A", roles=("owner",))
    b = await api.tenant("B", roles=("owner",))
    pa, pb = await policy(api, a.owner), await policy(api, b.owner)
    number = sorted(global_account.available[("US", "415")])[0]
    await api.post(f"{base(pa)}/purchase", a.owner, {"phoneNumber": number})
    listed = await api.call("GET", f"{base(pb)}/owned", b.owner)
    assert number not in {n["phoneNumber"] for n in listed["data"]}
    # Nor can B take it: it routes to A's policy.
    sid = global_account.number(number)["sid"]
    status, payload = await api.call("POST", f"{base(pb)}/assign", b.owner, {"phoneNumberId": sid}, expect=None)
    assert status == 409 and "another project" in payload["error"]
    assert global_account.owned[sid]["voice_url"] == VOICE
    # Nor release it through its own policy (which has no number), nor touch A's policy.
    status, payload = await api.call("POST", f"{base(pa)}/release", b.owner, {}, expect=None)
    assert status == 404


async def test_errors(api, make_api, tmp_path, twilio_standin, global_account):
    tenant = await api.tenant("Errors", roles=("owner", "viewer"))
    pid = await policy(api, tenant.owner)

    async def error(path, key, body, method="POST", want=400, client=api):
        status, payload = await client.call(method, path, key, body, expect=None)
        assert status == want, (path, status, payload)
        assert set(payload) == {"error"}
        return payload["error"]

    # Bad input: 400 before Twilio is asked.
    before = len(twilio_standin.requests)
    assert "countryCode" in await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "USA"})
    assert "areaCode" in await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "US", "areaCode": "4a"})
    assert "contains" in await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "US", "contains": "5"})
    assert "limit" in await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "US", "limit": 500})
    assert "unknown field 'country'" in await error(f"{base(pid)}/search", tenant.owner, {"country": "US"})
    assert "phoneNumber" in await error(f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": "12"})
    assert "phoneNumber: missing" in await error(f"{base(pid)}/purchase", tenant.owner, {})
    assert "phoneNumberId" in await error(f"{base(pid)}/assign", tenant.owner, {"phoneNumberId": "PNxyz"})
    assert len(twilio_standin.requests) == before
    # Unknown policy (or another project's): 404; a viewer may search and list, not buy.
    assert "No Incoming Call Policy" in await error(
        f"{base('9d7c3f9e-7d1f-4a53-9a57-0b8f8a4b2c11')}/search", tenant.owner, {"countryCode": "US"}, want=404)
    assert "Permission denied" in await error(f"{base(pid)}/purchase", tenant.keys["viewer"],
                                              {"phoneNumber": "+14155550100"}, want=403)
    assert "Permission denied" in await error(f"{base(pid)}/release", tenant.keys["viewer"], {}, want=403)

    # Twilio refuses: 502 with Twilio's message, and nothing changes in Hotline.
    message = await error(f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": "+14155559999"}, want=502)
    assert message == "Twilio answered 400, error 21422: PhoneNumber +14155559999 is not available."
    policy_row = await IncomingCallPolicy.aget(IncomingCallPolicy.id == pid)
    assert policy_row.routingPhoneNumber is None and policy_row.callProviderPhoneNumberId is None
    assert "owns no number" in await error(f"{base(pid)}/assign", tenant.owner, {"phoneNumber": "+14155559998"})

    # A number another policy routes: 409 before anything is bought.
    taken = sorted(global_account.available[("US", "415")])[0]
    await api.create("incoming-call-policy", tenant.owner, {"name": "Holder", "routingPhoneNumber": taken})
    assert "already used by the Incoming Call Policy 'Holder'" in await error(
        f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": taken}, want=409)
    assert global_account.owned == {}

    # A wrong global token: Twilio's 401, as a 502.
    wrong = await make_api(_config(tmp_path, twilio_standin, global_account,
                                   HOTLINE_TWILIO_AUTH_TOKEN="not-the-token"))
    assert await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "US"}, want=502, client=wrong) == \
        "Twilio answered 401, error 20003: Authenticate"

    # No account configured: 400 saying what to set. No public URL: 400 too.
    none = await make_api(_config(tmp_path, twilio_standin))
    message = await error(f"{base(pid)}/search", tenant.owner, {"countryCode": "US"}, client=none)
    assert "twilio.account_sid" in message and "HOTLINE_TWILIO_AUTH_TOKEN" in message \
        and "projectCallSMSConfigId" in message
    assert "No Twilio account" in await error(f"{base(pid)}/owned", tenant.owner, None, method="GET", client=none)
    no_url = await make_api(_config(tmp_path, twilio_standin, global_account, HOTLINE_TWILIO_PUBLIC_URL=""))
    number = sorted(global_account.available[("US", "415")])[1]
    assert "HOTLINE_TWILIO_PUBLIC_URL" in await error(f"{base(pid)}/purchase", tenant.owner,
                                                      {"phoneNumber": number}, client=no_url)
    # Releasing a policy without a number needs no account at all.
    assert (await none.post(f"{base(pid)}/release", tenant.owner, {}))["released"] is False


async def test_a_twilio_that_does_not_answer_is_a_504_not_a_hang(api, twilio_standin, monkeypatch):
    monkeypatch.setattr(phone_numbers, "TWILIO_TIMEOUT", 0.3)
    tenant = await api.tenant("Slow", roles=("owner",))
    pid = await policy(api, tenant.owner)
    twilio_standin.stall = 30.0
    status, payload = await api.call("POST", f"{base(pid)}/search", tenant.owner, {"countryCode": "US"}, expect=None)
    assert status == 504 and "did not answer" in payload["error"]


async def test_a_purchase_recorded_by_nobody_is_given_back(api, twilio_standin, global_account):
    """Two purchases for one policy at once: one wins; the other's number is released, not kept."""
    import asyncio

    tenant = await api.tenant("Race", roles=("owner",))
    pid = await policy(api, tenant.owner)
    first, second = sorted(global_account.available[("US", "415")])[:2]
    results = await asyncio.gather(
        api.call("POST", f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": first}, expect=None),
        api.call("POST", f"{base(pid)}/purchase", tenant.owner, {"phoneNumber": second}, expect=None))
    statuses = sorted(status for status, _ in results)
    assert statuses in ([200, 200], [200, 409])
    kept = {payload["callProviderPhoneNumberId"] for status, payload in results if status == 200}
    if statuses == [200, 409]:
        assert set(global_account.owned) == kept and len(global_account.released) == 1
