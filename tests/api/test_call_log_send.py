"""``POST /api/call-log/send``: permissions, bad input (a 400 that places no call), the row it creates,
and a 503 from a server that does not run the call services. The requests go to the application
``hotline serve`` builds (ivr.main.build_app) with its real notification service; no Asterisk
answers here, so every call it places ends as an Error saying that AMI is not connected (the
end-to-end tests place real ones)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid

import pytest

from ivr.main import NOTIFIER, build_app
from ivr.store import models as m
from ivr.store.db import open_database
from tests.api.conftest import ApiClient

SEND = "/api/call-log/send"
INCIDENT = "6a1a3c52-8f4f-4c55-9a07-5d7c1d7e0b11"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def calling(database_url, config, aiohttp_client):
    """The API with the call services, as `hotline serve` runs them (without ARI), and its notifier."""
    db = open_database(database_url, pool_size=2)
    config = config.replace(controller__ari=False, ami__port=closed_port(), ami__secret="not-used",
                            agi__port=closed_port(), agi__secret="not-used-0123456789")
    app = build_app(config, db=db)
    client = await aiohttp_client(app)
    service = app[NOTIFIER]
    service.connect_wait = 1.0  # no AMI answers here: each call fails soon, and truthfully
    try:
        yield ApiClient(client, db), service
    finally:
        await client.close()
        await db.close_pool()


async def outcome_of(api: ApiClient, call_log_id: str, timeout: float = 10.0) -> m.CallLog:
    """The Call Log row once the service recorded what happened to its call."""
    deadline = time.monotonic() + timeout
    while True:
        row = await api.db.run(m.CallLog.get_by_id, uuid.UUID(call_log_id))
        if row.status is not None:
            return row
        assert time.monotonic() < deadline, "the call's outcome was never recorded"
        await asyncio.sleep(0.05)


async def tenant_with_numbers(api: ApiClient, name: str, *numbers: str, routing: str | None = None):
    """A project whose user has these verified numbers, and an Incoming Call Policy routing ``routing``
    (a number of the project's own, usable as fromNumber: ``tenant.routing``)."""
    routing = routing or f"+1212{random.randint(2_000_000, 9_999_999)}"
    tenant = await api.tenant(name)
    tenant.routing = routing
    user = await api.create("user", tenant.owner, {"name": "On call"})
    for number in numbers:
        kind = "sipUri" if number.startswith("sip:") else "phoneNumber"
        await api.create("user-incoming-call-number", tenant.owner,
                         {"userId": user["_id"], kind: number, "isVerified": True})
    await api.create("incoming-call-policy", tenant.owner, {"name": f"{name} desk", "routingPhoneNumber": routing})
    return tenant


async def queued(api: ApiClient, tenant) -> int:
    """Calls of this project waiting in the outbox (the session's tests share the database)."""
    def count():
        return sum(msg.payload.get("projectId") == tenant.project_id for msg in m.OutboxMessage.select())
    return await api.db.run(count)


async def test_a_call_is_placed_and_its_row_created_at_once(calling):
    api, notifier = calling
    tenant = await tenant_with_numbers(api, "Calls", "+14155552671")
    sent = await api.post(SEND, tenant.keys["member"], {"toNumber": "(415) 555-2671", "message": " Disk  full on db-1 ",
                                                        "incidentId": INCIDENT, "fromNumber": tenant.routing})
    assert sent["status"] is None and sent["toNumber"] == "+14155552671" and sent["fromNumber"] == tenant.routing
    assert sent["callData"] == {"message": "Disk full on db-1", "kind": "notification", "incidentId": INCIDENT}
    row = await api.post(f"/api/call-log/{sent['_id']}/get-item", tenant.keys["viewer"],
                         {"select": {"status": True, "statusMessage": True, "toNumber": True, "incidentId": True,
                                     "callCostInUSDCents": True, "projectId": True}})
    assert row["status"] is None and row["statusMessage"] == "The call is being placed."
    assert row["incidentId"] == INCIDENT and row["callCostInUSDCents"] == 0 and row["projectId"] == tenant.project_id
    done = await outcome_of(api, sent["_id"])
    assert done.status == "Error" and "not connected to Asterisk's AMI" in done.statusMessage
    assert done.callData["message"] == "Disk full on db-1" and done.callCostInUSDCents == 0


async def test_a_user_is_called_on_their_first_verified_number(calling):
    api, notifier = calling
    tenant = await api.tenant("Users")
    user = await api.create("user", tenant.owner, {"name": "Ada"})
    for data in ({"sipUri": "sip:ada-unverified@10.0.0.7"}, {"sipUri": "sip:ada@10.0.0.8", "isVerified": True},
                 {"phoneNumber": "+14155550111", "isVerified": True}):
        await api.create("user-incoming-call-number", tenant.owner, {"userId": user["_id"], **data})
    sent = await api.post(SEND, tenant.owner, {"userId": user["_id"], "message": "Page"})
    assert sent["toNumber"] == "sip:ada@10.0.0.8"
    row = await api.db.run(m.CallLog.get_by_id, uuid.UUID(sent["_id"]))
    assert row.userId == uuid.UUID(user["_id"])


@pytest.mark.parametrize(("body", "message"), [
    ({"toNumber": "+14155552671"}, "message: the text to speak is required"),
    ({"toNumber": "+14155552671", "message": "   "}, "message: the text to speak is required"),
    ({"toNumber": "+14155552671", "message": "x" * 1001}, "message: at most 1000 characters"),
    ({"message": "Hi"}, "give either toNumber"),
    ({"toNumber": "+14155552671", "userId": str(uuid.uuid4()), "message": "Hi"}, "give either toNumber"),
    ({"toNumber": "12", "message": "Hi"}, "toNumber: '12' is not a valid phone number"),
    ({"toNumber": "sip:", "message": "Hi"}, "toNumber: 'sip:' is not a SIP URI"),
    ({"toNumber": "sip:a-very-long-user-name@sip.example.com:5060", "message": "Hi"}, "longer than the 32"),
    ({"toNumber": 14155552671, "message": "Hi"}, "toNumber: must be a string"),
    ({"userId": str(uuid.uuid4()), "message": "Hi"}, "userId: no user"),
    ({"userId": "nope", "message": "Hi"}, "userId: 'nope' is not a valid ID"),
    ({"toNumber": "+14155552671", "message": "Hi", "fromNumber": "abc"}, "fromNumber: 'abc' is not a phone number"),
    ({"toNumber": "+14155552671", "message": "Hi", "incidentId": 42}, "incidentId: must be an ID"),
    ({"toNumber": "+14155552671", "message": "Hi", "colour": "red"}, "unknown field 'colour'"),
])
async def test_bad_input_is_a_400_and_places_no_call(calling, body, message):
    api, notifier = calling
    tenant = await tenant_with_numbers(api, "Bad", "+14155552671")
    status, payload = await api.call("POST", SEND, tenant.owner, body, expect=None)
    assert status == 400 and message in payload["error"], payload
    assert await api.post("/api/call-log/count", tenant.owner, {}) == {"count": 0}
    assert await queued(api, tenant) == 0


async def test_a_user_without_a_verified_number_is_a_400(calling):
    api, notifier = calling
    tenant = await api.tenant("Unverified")
    user = await api.create("user", tenant.owner, {"name": "Bo"})
    await api.create("user-incoming-call-number", tenant.owner, {"userId": user["_id"], "sipUri": "sip:bo@10.0.0.9"})
    status, payload = await api.call("POST", SEND, tenant.owner, {"userId": user["_id"], "message": "Hi"}, expect=None)
    assert status == 400 and "has no verified number" in payload["error"] and await queued(api, tenant) == 0
    other = await api.tenant("Other")  # a user of another project is unknown here
    status, payload = await api.call("POST", SEND, other.owner, {"userId": user["_id"], "message": "Hi"}, expect=None)
    assert status == 400 and "no user" in payload["error"]


async def test_permissions(calling):
    api, notifier = calling
    tenant = await tenant_with_numbers(api, "Perms", "+14155552671")
    body = {"toNumber": "+14155552671", "message": "Hi"}
    for role in ("owner", "admin", "member"):
        await api.post(SEND, tenant.keys[role], body)
    status, payload = await api.call("POST", SEND, tenant.keys["viewer"], body, expect=None)
    assert status == 403 and "Create Call Log" in payload["error"]
    project = uuid.UUID(tenant.project_id)
    reader = await api.key(project, permissions=["Read Call Log"])
    assert (await api.call("POST", SEND, reader, body, expect=None))[0] == 403
    creator = await api.key(project, permissions=["Create Call Log"])
    await api.post(SEND, creator, body)
    assert (await api.call("POST", SEND, None, body, expect=None))[0] == 401
    assert await api.post("/api/call-log/count", tenant.owner, {}) == {"count": 4}
    # The log itself stays read-only.
    status, payload = await api.call("POST", "/api/call-log", tenant.owner, {"data": {"toNumber": "+14155552671"}},
                                     expect=None)
    assert status == 405


async def test_an_api_only_server_queues_the_call_for_the_call_services(api):
    """`hotline serve --api-only` places nothing itself: the call waits in the outbox for whichever
    process runs the call services (they may run on another machine)."""
    tenant = await tenant_with_numbers(api, "Queued", "+14155552671")
    sent = await api.post(SEND, tenant.owner, {"toNumber": "+14155552671", "message": "Hi"})
    assert sent["status"] is None
    messages = await api.db.run(lambda: list(m.OutboxMessage.select().where(m.OutboxMessage.kind == "notification-call")))
    assert [msg.payload["callLogId"] for msg in messages if msg.payload["callLogId"] == sent["_id"]] == [sent["_id"]]


@pytest.mark.parametrize("number", ["+1 900 555 0199", "+44 909 879 0000", "sip:premium@203.0.113.5",
                                    "sip:alice@10.0.0.8"])
async def test_toll_fraud_only_verified_numbers_of_the_project_are_called(calling, number):
    """A key of the project can ring its verified numbers only: not a premium-rate number, not a SIP
    URI on some host, not a number another project verified."""
    api, notifier = calling
    await tenant_with_numbers(api, "Elsewhere", "sip:alice@10.0.0.8")  # another project's verified number
    tenant = await tenant_with_numbers(api, "Fraud")
    status, payload = await api.call("POST", SEND, tenant.keys["member"], {"toNumber": number, "message": "Hi"},
                                     expect=None)
    assert status == 400 and "is not a verified number of this project" in payload["error"], payload
    assert await api.post("/api/call-log/count", tenant.owner, {}) == {"count": 0}


async def test_the_caller_id_is_one_of_the_projects_own_numbers(calling):
    api, _ = calling
    tenant = await tenant_with_numbers(api, "Caller ID", "+14155552671")
    body = {"toNumber": "+14155552671", "message": "Hi"}
    status, payload = await api.call("POST", SEND, tenant.owner, {**body, "fromNumber": "+1 900 555 0100"},
                                     expect=None)
    assert status == 400 and "is not one of this project's numbers" in payload["error"]
    sent = await api.post(SEND, tenant.owner, {**body, "fromNumber": tenant.routing})
    assert sent["fromNumber"] == tenant.routing


async def test_a_project_has_caps_on_calls_in_progress_and_per_hour(database_url, config, aiohttp_client):
    db = open_database(database_url, pool_size=2)
    config = config.replace(notify__max_calls_in_progress=2, notify__max_calls_per_hour=3)
    client = ApiClient(await aiohttp_client(build_app(config, db=db, calls=False)), db)
    try:
        tenant = await tenant_with_numbers(client, "Capped", "+14155552671")
        body = {"toNumber": "+14155552671", "message": "Hi"}
        answers = await asyncio.gather(*(client.call("POST", SEND, tenant.owner, body, expect=None) for _ in range(5)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 200, 429, 429, 429], answers
        assert "notify.max_calls_in_progress" in next(p["error"] for s, p in answers if s == 429)
        # Ended calls free their place; the hourly cap still counts them.
        await db.run(lambda: m.CallLog.update(status="Success").where(
            m.CallLog.project == uuid.UUID(tenant.project_id)).execute())
        assert (await client.call("POST", SEND, tenant.owner, body, expect=None))[0] == 200
        status, payload = await client.call("POST", SEND, tenant.owner, body, expect=None)
        assert status == 429 and "notify.max_calls_per_hour" in payload["error"]
        assert await client.post("/api/call-log/count", tenant.owner, {}) == {"count": 3}
    finally:
        await client.client.close()
        await db.close_pool()


async def test_a_number_on_a_host_outside_sip_allowed_hosts_is_refused(api):
    tenant = await api.tenant("Hosts")
    user = await api.create("user", tenant.owner, {"name": "Ann"})
    for uri in ("sip:ann@203.0.113.5", "sip:ann@pbx.example.com:5060"):
        status, payload = await api.call("POST", "/api/user-incoming-call-number", tenant.owner,
                                         {"data": {"userId": user["_id"], "sipUri": uri}}, expect=None)
        assert status == 400 and "sip.allowed_hosts" in payload["error"], payload
    await api.create("user-incoming-call-number", tenant.owner, {"userId": user["_id"], "sipUri": "sip:ann@10.1.2.3"})


async def test_ready_and_health(api):
    response = await api.client.get("/api/ready")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "checks": {"database": {"ok": True}}}
    assert await (await api.client.get("/api/health")).json() == {"status": "ok"}


async def test_the_operation_is_documented(api):
    document = await (await api.client.get("/api/openapi.json")).json()
    operation = document["paths"][SEND]["post"]
    assert operation["operationId"] == "sendCallLog"
    assert set(operation["responses"]) == {"200", "400", "401", "403", "429"}
    assert "Project Member" in operation["description"] and "Create Call Log" in operation["description"]


async def test_rows_left_without_an_outcome_are_closed_once_no_call_can_still_be_running(calling, config):
    import datetime as dt

    from ivr.shells.notify import NotificationService

    api, _ = calling
    tenant = await api.tenant("Orphans")

    def rows():
        project = uuid.UUID(tenant.project_id)
        old = m.CallLog.create(project=project, toNumber="+14155550100", status=None,
                               createdAt=m.utcnow() - dt.timedelta(hours=1))
        recent = m.CallLog.create(project=project, toNumber="+14155550100", status=None)
        return old.id, recent.id

    old_id, recent_id = await api.db.run(rows)

    class Ami:
        def add_listener(self, fn):
            pass

    service = NotificationService(config, api.db, Ami(), tts=None)
    assert await service.close_orphans() >= 1
    old, recent = [await api.db.run(m.CallLog.get_by_id, row_id) for row_id in (old_id, recent_id)]
    assert (old.status, old.statusMessage) == ("Error", "Hotline stopped before the call's outcome was known.")
    assert recent.status is None   # maybe another Hotline is placing it right now
