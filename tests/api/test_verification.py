"""Verified numbers: codes, wrong tries, the lock, re-sending, permissions, and that only verified numbers
are ever rung. The code is read as an administrator reads it on the server (``hotline number code``
calls ``ivr.store.verification.pending_code``): the API never shows it."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest

from ivr.store import callstore, verification
from ivr.store import models as m
from ivr.store.models import Role

NUMBERS = "/api/user-incoming-call-number"
VERIFY = f"{NUMBERS}/verify"
RESEND = f"{NUMBERS}/resend-verification-code"


def lan_host() -> str:
    """A host of its own for each test, on a private network (sip.allowed_hosts' default)."""
    n = uuid.uuid4().int
    return f"10.{n % 250 + 1}.{n // 250 % 250 + 1}.{n // 62500 % 250 + 1}"


async def pending(api, number_id: str) -> verification.PendingCode:
    def read():
        return verification.pending_code(m.UserIncomingCallNumber.get_by_id(uuid.UUID(number_id)))
    return await api.db.run(read)


async def code_of(api, number_id: str) -> str:
    code = (await pending(api, number_id)).code
    assert code is not None and len(code) == 6 and code.isdigit()
    return code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def verify(api, key, number_id, code, expect=200):
    return await api.call("POST", VERIFY, key, {"itemId": number_id, "code": code}, expect=expect)


async def is_verified(api, tenant, number_id) -> bool:
    row = await api.post(f"{NUMBERS}/{number_id}/get-item", tenant.owner, {"select": {"isVerified": True}})
    return row["isVerified"]


@pytest.fixture
async def number(api, acme) -> tuple[str, str]:
    """(user id, id of a new unverified SIP number)."""
    user = await api.create("user", acme.owner, {"name": "Nina"})
    created = await api.create("user-incoming-call-number", acme.owner,
                               {"userId": user["_id"], "sipUri": f"sip:{uuid.uuid4().hex[:8]}@10.0.0.9"})
    return user["_id"], created["_id"]


async def test_a_number_is_verified_with_its_code_and_only_then_rung(api, acme, number):
    user_id, number_id = number
    policy = await api.create("incoming-call-policy", acme.owner, {"name": f"V {uuid.uuid4().hex[:6]}"})
    rule = await api.create("incoming-call-policy-escalation-rule", acme.owner,
                            {"incomingCallPolicyId": policy["_id"], "userId": user_id})
    row = await api.db.run(m.IncomingCallPolicyEscalationRule.get_by_id, uuid.UUID(rule["_id"]))
    assert await api.db.run(callstore.resolve_rule, row, m.utcnow()) == []   # unverified: never rung
    code = await code_of(api, number_id)
    answer = await verify(api, acme.keys["member"], number_id, wrong(code), expect=400)
    assert answer == {"error": "Wrong code: 4 tries left before the number is locked."}
    assert await verify(api, acme.keys["member"], number_id, f" {code[:3]}-{code[3:]} ") == {}
    assert await is_verified(api, acme, number_id)
    assert [c.number_id for c in await api.db.run(callstore.resolve_rule, row, m.utcnow())] == [number_id]
    # The code is spent: nothing left to read, and verifying again says so.
    assert (await pending(api, number_id)).reason == "the number is already verified"
    answer = await verify(api, acme.keys["member"], number_id, code, expect=400)
    assert answer == {"error": "This number is already verified."}


async def test_five_wrong_codes_lock_the_number_until_an_admin_resends(api, acme, number):
    _, number_id = number
    code = await code_of(api, number_id)
    for left in (4, 3, 2, 1):
        answer = await verify(api, acme.keys["member"], number_id, wrong(code), expect=400)
        assert f"{left} tr" in answer["error"]
    answer = await verify(api, acme.keys["member"], number_id, wrong(code), expect=423)
    assert answer["error"].startswith("Wrong code. This number is locked after 5 wrong codes.")
    assert "Project Owner or Project Admin re-sending a code" in answer["error"]
    # Locked: even the right code is refused, and the plain code is gone.
    answer = await verify(api, acme.owner, number_id, code, expect=423)
    assert answer["error"].startswith("This number is locked after 5 wrong codes.")
    assert (await pending(api, number_id)).code is None
    # A member cannot unlock it by re-sending; an admin can.
    answer = await api.call("POST", RESEND, acme.keys["member"], {"itemId": number_id}, expect=403)
    assert "only a Project Owner or Project Admin key can re-send" in answer["error"]
    assert await api.call("POST", RESEND, acme.keys["admin"], {"itemId": number_id}) == {}
    new_code = await code_of(api, number_id)
    assert (await pending(api, number_id)).attempts == 0
    await verify(api, acme.keys["member"], number_id, new_code)
    assert await is_verified(api, acme, number_id)


async def test_resend_replaces_the_code_and_keeps_the_count_of_wrong_tries(api, acme, number):
    _, number_id = number
    first = await code_of(api, number_id)
    await verify(api, acme.keys["member"], number_id, wrong(first), expect=400)
    assert await api.call("POST", RESEND, acme.keys["member"], {"itemId": number_id}) == {}
    second = await code_of(api, number_id)
    if second != first:  # one chance in a million that the new code is the same
        answer = await verify(api, acme.keys["member"], number_id, first, expect=400)
        assert answer["error"].startswith("Wrong code: 3 tries left")  # a member's re-send keeps the count
    await verify(api, acme.keys["member"], number_id, second)


async def test_codes_expire(api, acme, number):
    _, number_id = number
    code = await code_of(api, number_id)
    V = m.UserIncomingCallNumberVerification
    await api.db.run(lambda: V.update(expiresAt=m.utcnow() - dt.timedelta(seconds=1)).where(
        V.userIncomingCallNumber == uuid.UUID(number_id)).execute())
    answer = await verify(api, acme.owner, number_id, code, expect=400)
    assert answer["error"].startswith("This code expired: re-send one")
    await api.call("POST", RESEND, acme.owner, {"itemId": number_id})
    await verify(api, acme.owner, number_id, await code_of(api, number_id))


async def test_the_code_is_stored_hashed_and_never_shown_by_the_api(api, acme, number):
    _, number_id = number
    code = await code_of(api, number_id)
    row = await api.db.run(lambda: m.UserIncomingCallNumberVerification.get(
        m.UserIncomingCallNumberVerification.userIncomingCallNumber == uuid.UUID(number_id)))
    assert row.codeHash == verification.hash_code(row.codeSalt, code) and code not in row.codeHash
    item = await api.post(f"{NUMBERS}/{number_id}/get-item", acme.owner, {})
    assert code not in str(item)
    document = await api.call("GET", "/api/openapi.json")
    assert "codeHash" not in str(document) and "undeliveredCode" not in str(document)
    # Once delivered (by a call, later), the plain code is no longer kept; the hash still checks it.
    await api.db.run(verification.mark_delivered, uuid.UUID(number_id))
    assert "already delivered" in (await pending(api, number_id)).reason
    await verify(api, acme.owner, number_id, code)


async def test_a_code_resent_during_its_delivery_call_is_still_delivered(api, acme, number):
    _, number_id = number
    first = await code_of(api, number_id)
    second = first
    while second == first:  # (a new code is random: it may repeat, one time in a million)
        await api.call("POST", RESEND, acme.owner, {"itemId": number_id})   # while the first code's call rings
        second = await code_of(api, number_id)
    await api.db.run(verification.mark_delivered, uuid.UUID(number_id), first)  # the first call ends
    assert (await pending(api, number_id)).code == second  # the new code still waits for its call
    await api.db.run(verification.mark_delivered, uuid.UUID(number_id), second)
    assert "already delivered" in (await pending(api, number_id)).reason


async def test_a_changed_number_must_be_verified_again(api, acme):
    user = await api.create("user", acme.owner, {"name": "Otto"})
    created = await api.create("user-incoming-call-number", acme.owner,
                               {"userId": user["_id"], "phoneNumber": "+14155550142", "isVerified": True})
    number_id = created["_id"]
    assert "already verified" in (await pending(api, number_id)).reason  # no code for a number made verified
    await api.call("PUT", f"{NUMBERS}/{number_id}", acme.keys["member"], {"data": {"phoneNumber": "+14155550143"}})
    assert not await is_verified(api, acme, number_id)
    await verify(api, acme.keys["member"], number_id, await code_of(api, number_id))
    assert await is_verified(api, acme, number_id)


@pytest.mark.parametrize(("role", "permissions", "allowed"), [
    pytest.param(Role.VIEWER, (), False, id="viewer"),
    pytest.param(None, ("Read All Project Resources",), False, id="read all"),
    pytest.param(None, ("Create User Incoming Call Number",), False, id="create only"),
    pytest.param(None, ("Edit User Incoming Call Number",), True, id="edit"),
    pytest.param(Role.MEMBER, (), True, id="member"),
])
async def test_verifying_needs_edit_permission(api, acme, number, role, permissions, allowed):
    _, number_id = number
    key = await api.key(acme.project_id, role=role, permissions=permissions)
    code = await code_of(api, number_id)
    for path, body in ((RESEND, {"itemId": number_id}), (VERIFY, {"itemId": number_id, "code": "000000"})):
        status, answer = await api.call("POST", path, key, body, expect=None)
        if allowed:
            assert status in (200, 400), answer
            continue
        assert status == 403, answer
        assert answer["error"].endswith("needs one of: Project Owner, Project Admin, Project Member, "
                                        "Edit User Incoming Call Number")
    if not allowed:
        await verify(api, acme.owner, number_id, code)  # the refused requests changed nothing


async def test_bad_requests(api, acme, number):
    _, number_id = number
    other = await api.tenant("Elsewhere", roles=("owner",))
    unknown = str(uuid.uuid4())
    for path, body, status, message in [
        (VERIFY, {"code": "123456"}, 400, "itemId: missing"),
        (VERIFY, {"itemId": number_id}, 400, "code: missing"),
        (VERIFY, {"itemId": 12, "code": "123456"}, 400, "itemId: must be an ID"),
        (VERIFY, {"itemId": "nope", "code": "123456"}, 400, "itemId: 'nope' is not a valid ID"),
        (VERIFY, {"itemId": number_id, "code": 123456}, 400, "code: must be a string"),
        (VERIFY, {"itemId": number_id, "code": "12345"}, 400, "code: must be the 6 digits"),
        (VERIFY, {"itemId": number_id, "code": "１２３４５６"}, 400, "code: must be the 6 digits"),
        (VERIFY, {"itemId": number_id, "code": "123456", "extra": 1}, 400, "unknown field 'extra'"),
        (VERIFY, {"itemId": unknown, "code": "123456"}, 404, f"No User Incoming Call Number with id {unknown}."),
        (RESEND, {"itemId": unknown}, 404, f"No User Incoming Call Number with id {unknown}."),
        (RESEND, {}, 400, "itemId: missing"),
    ]:
        got, answer = await api.call("POST", path, acme.owner, body, expect=None)
        assert (got, answer["error"][:len(message)]) == (status, message), (body, answer)
    # Another project's number is not found, whatever the code.
    code = await code_of(api, number_id)
    got, answer = await api.call("POST", VERIFY, other.owner, {"itemId": number_id, "code": code}, expect=None)
    assert got == 404
    assert (await pending(api, number_id)).attempts == 0  # malformed codes and other projects count nothing
    await verify(api, acme.owner, number_id, code)


# -- the guard of a destination: outlives the number, and limits the codes sent ---------------------


async def new_number(api, tenant, address: str, key: str | None = None, expect: int = 200):
    user = await api.create("user", tenant.owner, {"name": f"U {uuid.uuid4().hex[:6]}"})
    field = "sipUri" if address.startswith("sip") else "phoneNumber"
    return await api.create("user-incoming-call-number", key or tenant.owner, {"userId": user["_id"], field: address},
                            expect=expect)


async def lock(api, key, number_id):
    code = await code_of(api, number_id)
    for _ in range(verification.MAX_ATTEMPTS - 1):
        await verify(api, key, number_id, wrong(code), expect=400)
    await verify(api, key, number_id, wrong(code), expect=423)


async def test_the_lock_survives_deleting_and_re_creating_the_number(api, acme):
    """Locked after 5 wrong codes, a destination stays locked whatever number row points at it: deleting
    the number and creating it again (in any spelling) neither unlocks it nor gives fresh tries."""
    host = lan_host()
    member = acme.keys["member"]
    first = await new_number(api, acme, f"sip:vic@{host}", member)
    await lock(api, member, first["_id"])
    await api.call("DELETE", f"{NUMBERS}/{first['_id']}", member)
    for spelling in (f"sip:vic@{host}", f"sip:Vic@{host.upper()}:5060;transport=tcp"):
        again = await new_number(api, acme, spelling, member)           # created, but locked: no code
        assert (await pending(api, again["_id"])).reason.startswith("it is locked after 5 wrong codes")
        answer = await verify(api, member, again["_id"], "000000", expect=423)
        assert answer["error"].startswith("This number is locked after 5 wrong codes.")
        answer = await api.call("POST", RESEND, member, {"itemId": again["_id"]}, expect=403)
        assert "only a Project Owner or Project Admin key can re-send" in answer["error"]
        await api.call("DELETE", f"{NUMBERS}/{again['_id']}", member)
    # A Project Owner or Admin re-sending still unlocks it (and resets the count).
    again = await new_number(api, acme, f"sip:vic@{host}", member)
    assert await api.call("POST", RESEND, acme.keys["admin"], {"itemId": again["_id"]}) == {}
    assert (await pending(api, again["_id"])).attempts == 0
    await verify(api, member, again["_id"], await code_of(api, again["_id"]))
    assert await is_verified(api, acme, again["_id"])
    # The lock was this project's: another project's number for the same destination is not locked.
    other = await api.tenant("Other")
    elsewhere = await new_number(api, other, f"sip:vic@{host}")
    await verify(api, other.owner, elsewhere["_id"], await code_of(api, elsewhere["_id"]))


async def test_wrong_codes_are_counted_across_number_rows_of_one_destination(api, acme):
    phone = f"+1415555{uuid.uuid4().int % 10000:04d}"
    member = acme.keys["member"]
    first = await new_number(api, acme, phone, member)
    code = await code_of(api, first["_id"])
    for left in (4, 3):
        answer = await verify(api, member, first["_id"], wrong(code), expect=400)
        assert f"{left} tries left" in answer["error"]
    await api.call("DELETE", f"{NUMBERS}/{first['_id']}", member)
    second = await new_number(api, acme, phone, member)
    code = await code_of(api, second["_id"])
    answer = await verify(api, member, second["_id"], wrong(code), expect=400)
    assert answer["error"] == "Wrong code: 2 tries left before the number is locked."   # not 4: the count stayed
    await verify(api, member, second["_id"], code)                 # the right code resets the count
    third = await new_number(api, acme, phone, member)               # (a second row for the destination)
    answer = await verify(api, member, third["_id"], wrong(await code_of(api, third["_id"])), expect=400)
    assert answer["error"].startswith("Wrong code: 4 tries left")


async def test_changing_a_number_to_a_locked_destination_gives_it_no_code(api, acme):
    member = acme.keys["member"]
    host = lan_host()
    locked = await new_number(api, acme, f"sip:a@{host}", member)
    await lock(api, member, locked["_id"])
    other = await new_number(api, acme, f"sip:b@{host}", member)
    await api.call("PUT", f"{NUMBERS}/{other['_id']}", member, {"data": {"sipUri": f"sip:A@{host}"}})
    assert (await pending(api, other["_id"])).reason.startswith("it is locked")
    await verify(api, member, other["_id"], "000000", expect=423)


async def retry_after(api, key, path, body) -> tuple[int, dict, str | None]:
    resp = await api.client.post(path, json=body, headers={"ApiKey": key})
    return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_codes_per_destination_are_limited_to_5_a_day_whoever_asks(api, acme):
    member, admin = acme.keys["member"], acme.keys["admin"]
    host = lan_host()
    number = await new_number(api, acme, f"sip:lim@{host}", member)           # code 1
    for _ in range(4):                                                          # codes 2 to 5
        assert await api.call("POST", RESEND, member, {"itemId": number["_id"]}) == {}
    fifth = await code_of(api, number["_id"])
    status, answer, retry = await retry_after(api, member, RESEND, {"itemId": number["_id"]})
    assert status == 429, answer
    assert answer["error"].startswith(f"Too many verification codes for sip:lim@{host}: at most 5 are sent to one "
                                      "number in 24 hours. Try again after ")
    assert answer["error"].endswith("Z (in 24 h 0 min).")
    assert 86_000 < int(retry) <= 86_400
    assert (await pending(api, number["_id"])).code == fifth                 # the refused re-send changed nothing
    status, _, _ = await retry_after(api, admin, RESEND, {"itemId": number["_id"]})
    assert status == 429                                                        # an admin is limited too
    # Creating the number again (in another spelling) is a new code too: refused, and nothing is created.
    await api.call("DELETE", f"{NUMBERS}/{number['_id']}", member)
    user = await api.create("user", acme.owner, {"name": "Lim"})
    status, answer, retry = await retry_after(api, member, "/api/user-incoming-call-number",
                                              {"data": {"userId": user["_id"], "sipUri": f"sip:LIM@{host}:5060"}})
    assert status == 429 and answer["error"].startswith("Too many verification codes") and retry
    listed = await api.post(f"{NUMBERS}/get-list", acme.owner, {"query": {"userId": user["_id"]}})
    assert listed["count"] == 0
    # A number already verified (created so by an admin) needs no code: not limited.
    await api.create("user-incoming-call-number", admin, {"userId": user["_id"], "sipUri": f"sip:lim@{host}",
                                                          "isVerified": True})
    # A day later the oldest code no longer counts.
    G = m.VerificationGuard
    day_ago = (m.utcnow() - dt.timedelta(hours=24, seconds=1)).isoformat()

    def age_one() -> None:
        guard = G.get(G.project == uuid.UUID(acme.project_id), G.destination == f"sip:lim@{host}")
        G.update(codesSentAt=[day_ago, *guard.codesSentAt[1:]]).where(G.id == guard.id).execute()

    await api.db.run(age_one)
    again = await new_number(api, acme, f"sip:lim@{host}", member)
    await verify(api, member, again["_id"], await code_of(api, again["_id"]))


async def test_changing_a_number_to_a_destination_out_of_codes_is_refused(api, acme):
    member = acme.keys["member"]
    host = lan_host()
    busy = await new_number(api, acme, f"sip:busy@{host}", member)
    for _ in range(4):
        await api.call("POST", RESEND, member, {"itemId": busy["_id"]})
    other = await new_number(api, acme, f"sip:calm@{host}", member)
    status, answer, _ = await retry_after(api, member, f"{NUMBERS}/{other['_id']}/update-item",
                                          {"data": {"sipUri": f"sip:busy@{host}"}})
    assert status == 429 and answer["error"].startswith(f"Too many verification codes for sip:busy@{host}")
    row = await api.post(f"{NUMBERS}/{other['_id']}/get-item", acme.owner, {"select": {"sipUri": True}})
    assert row["sipUri"] == f"sip:calm@{host}"                                 # unchanged
    await verify(api, member, other["_id"], await code_of(api, other["_id"]))   # its code still works


async def test_the_limit_of_codes_is_a_setting(api, database_url, aiohttp_client, tmp_path):
    from api.app import create_app
    from ivr.config import load_config

    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "0",
                              "HOTLINE_NOTIFY_VERIFICATION_CODES_PER_DAY": "2"})
    client = await aiohttp_client(create_app(config, db=api.db))
    tenant = await api.tenant("Limits")
    limited = type(api)(client, api.db)
    number = await new_number(limited, tenant, f"sip:two@{lan_host()}")
    await limited.call("POST", RESEND, tenant.owner, {"itemId": number["_id"]})
    answer = await limited.call("POST", RESEND, tenant.owner, {"itemId": number["_id"]}, expect=429)
    assert "at most 2 are sent" in answer["error"]
    unlimited = dt.datetime(2030, 1, 1)
    row = await api.db.run(m.UserIncomingCallNumber.get_by_id, uuid.UUID(number["_id"]))
    for minute in range(7):                                   # 0: no limit
        await api.db.run(lambda: verification.issue_code(row, codes_per_day=0,
                                                         now=unlimited + dt.timedelta(minutes=minute)))


async def test_debug_logs_never_show_a_code(api, acme, caplog):
    """``general.log_level: DEBUG`` makes peewee log every query with its parameters."""
    caplog.set_level(logging.DEBUG, logger="peewee")
    number = await new_number(api, acme, f"sip:log@{lan_host()}")
    code = await code_of(api, number["_id"])
    await api.call("POST", RESEND, acme.owner, {"itemId": number["_id"]})
    second = await code_of(api, number["_id"])
    await verify(api, acme.owner, number["_id"], wrong(second), expect=400)
    await verify(api, acme.owner, number["_id"], second)
    queries = [r.getMessage() for r in caplog.records if r.name == "peewee"]
    assert not any(code in q or second in q for q in queries)
    assert any("user_incoming_call_number_verification" in q and "(hidden)" in q for q in queries)
