"""Verified numbers: codes, wrong tries, the lock, re-sending, permissions, and that only verified numbers
are ever rung. The code is read as an administrator reads it on the server (``hotline number code``
calls ``ivr.store.verification.pending_code``): the API never shows it."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from ivr.store import callstore, verification
from ivr.store import models as m
from ivr.store.models import Role

NUMBERS = "/api/user-incoming-call-number"
VERIFY = f"{NUMBERS}/verify"
RESEND = f"{NUMBERS}/resend-verification-code"


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
