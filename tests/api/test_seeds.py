"""Every request/response example of the seed documents, against the running app.

The examples are the seeds' own bodies; the assertions check the same fields and
the same shapes (values that the seeds invent, such as ids, are the real ones).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from api.registry import BY_PATH, RESOURCES
from ivr.store.models import CallLog, IncomingCallLog, User
from tests.api.factories import build_graph

SEED_POLICY_SELECT = {
    "isEnabled": True,
    "name": True,
    "projectId": True,
    "repeatPolicyIfNoOneAnswers": True,
    "repeatPolicyIfNoOneAnswersTimes": True,
}
SEED_POLICY_DATA = {
    "isEnabled": True,
    "name": "Example name",
    "projectId": "550e8400-e29b-41d4-a716-446655440000",
    "repeatPolicyIfNoOneAnswers": True,
    "repeatPolicyIfNoOneAnswersTimes": 100,
}
POLICY_KEYS = {"_id", "isEnabled", "name", "projectId", "repeatPolicyIfNoOneAnswers", "repeatPolicyIfNoOneAnswersTimes"}


def is_uuid(text) -> bool:
    try:
        uuid.UUID(text)
        return True
    except (TypeError, ValueError):
        return False


# -- Incoming Call Policy -------------------------------------------------------------


async def test_policy_create_example(api, acme):
    """The seed's example answer shows the fields it sent; OneUptime's server answers the saved object,
    and so does Hotline: the sent fields with their values, and what the server generated."""
    created = await api.post("/api/incoming-call-policy", acme.owner, {"data": SEED_POLICY_DATA})
    assert POLICY_KEYS <= set(created)
    assert is_uuid(created["_id"])
    # The key's project is forced: the seed's projectId is someone else's.
    assert created["projectId"] == acme.project_id
    assert {k: created[k] for k in POLICY_KEYS - {"_id", "projectId"}} == {
        "isEnabled": True, "name": "Example name", "repeatPolicyIfNoOneAnswers": True,
        "repeatPolicyIfNoOneAnswersTimes": 100}
    # Generated: the slug, the defaults of what was not sent, the timestamps, the (empty) labels.
    assert created["slug"].startswith("example-name")
    assert created["greetingMessage"] == "Please wait while we connect you to the on-call engineer."
    assert created["routingPhoneNumber"] is None
    assert created["createdAt"].endswith("Z") and created["updatedAt"].endswith("Z")
    assert created["labels"] == []
    # Exactly what get-item answers with every field selected.
    fields = {name: True for name in BY_PATH["incoming-call-policy"].schema.fields}
    item = await api.post(f"/api/incoming-call-policy/{created['_id']}/get-item", acme.owner,
                          {"select": {**fields, "labels": {"_id": True}}})
    assert created == item


@pytest.mark.parametrize("path", [r.path for r in RESOURCES if r.writable])
async def test_create_answers_the_saved_object(api, path):
    """Every resource: the answer holds every readable field, as get-item renders it."""
    graph = await build_graph(api, "Created")
    resource = BY_PATH[path]
    item_id = graph.ids[path][0]
    select = {**{name: True for name in resource.schema.fields},
              **{name: {"_id": True} for name in resource.extra_writable}}
    item = await api.post(f"/api/{path}/{item_id}/get-item", graph.key, {"select": select})
    assert set(item) == set(resource.schema.fields) | set(resource.extra_writable)
    assert item == graph.created[item_id]


async def test_policy_list_example(api, acme):
    for _ in range(3):
        await api.post("/api/incoming-call-policy", acme.owner, {"data": SEED_POLICY_DATA})
    await api.create("incoming-call-policy", acme.owner, {"name": "Other name"})
    listed = await api.post(
        "/api/incoming-call-policy/get-list", acme.owner,
        {"select": SEED_POLICY_SELECT, "query": {"name": "Example name"}, "sort": {"createdAt": -1}},
        params={"skip": "0", "limit": "10"})
    assert set(listed) == {"count", "limit", "skip", "data"}
    assert listed["count"] == 3 and listed["limit"] == 10 and listed["skip"] == 0
    assert len(listed["data"]) == 3
    for row in listed["data"]:
        assert set(row) == POLICY_KEYS
        assert row["projectId"] == acme.project_id
        assert row["repeatPolicyIfNoOneAnswersTimes"] == 100
    # Sorted by createdAt descending: the newest first.
    ids = [row["_id"] for row in listed["data"]]
    full = await api.post("/api/incoming-call-policy/get-list", acme.owner,
                          {"select": {"createdAt": True}, "query": {"name": "Example name"}})
    stamps = [row["createdAt"] for row in full["data"]]
    assert stamps == sorted(stamps, reverse=True)
    assert [row["_id"] for row in full["data"]] == ids


async def test_policy_list_get_method_works_like_post(api, acme):
    await api.post("/api/incoming-call-policy", acme.owner, {"data": SEED_POLICY_DATA})
    listed = await api.call("GET", "/api/incoming-call-policy/get-list", acme.owner,
                            {"select": SEED_POLICY_SELECT, "query": {"name": "Example name"}})
    assert listed["count"] == 1 and set(listed["data"][0]) == POLICY_KEYS


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_policy_get_item_example(api, acme, method):
    created = await api.post("/api/incoming-call-policy", acme.owner, {"data": SEED_POLICY_DATA})
    item = await api.call(method, f"/api/incoming-call-policy/{created['_id']}/get-item", acme.owner,
                          {"select": SEED_POLICY_SELECT})
    assert set(item) == POLICY_KEYS
    assert item == {k: created[k] for k in POLICY_KEYS}


async def test_policy_count_example(api, acme):
    for name in ("Example name", "Example name", "Another"):
        await api.create("incoming-call-policy", acme.owner, {"name": name})
    assert await api.post("/api/incoming-call-policy/count", acme.owner,
                          {"query": {"name": "Example name"}}) == {"count": 2}


@pytest.mark.parametrize("method,suffix", [("PUT", ""), ("POST", "/update-item"), ("GET", "/update-item")])
async def test_policy_update_example(api, acme, method, suffix):
    created = await api.create("incoming-call-policy", acme.owner, {"name": "Before", "isEnabled": False})
    answer = await api.call(method, f"/api/incoming-call-policy/{created['_id']}{suffix}", acme.owner,
                            {"data": {"isEnabled": True, "name": "Example name", "repeatPolicyIfNoOneAnswers": True}})
    assert answer == {}
    item = await api.post(f"/api/incoming-call-policy/{created['_id']}/get-item", acme.owner,
                          {"select": SEED_POLICY_SELECT})
    assert item["name"] == "Example name" and item["isEnabled"] is True
    assert item["repeatPolicyIfNoOneAnswers"] is True


@pytest.mark.parametrize("method,suffix", [("DELETE", ""), ("POST", "/delete-item"), ("GET", "/delete-item")])
async def test_policy_delete_example(api, acme, method, suffix):
    created = await api.create("incoming-call-policy", acme.owner, {"name": "Doomed"})
    assert await api.call(method, f"/api/incoming-call-policy/{created['_id']}{suffix}", acme.owner) == {}
    await api.post(f"/api/incoming-call-policy/{created['_id']}/get-item", acme.owner, expect=404)


async def test_policy_defaults_are_oneuptimes(api, acme):
    name = f"Defaults {uuid.uuid4().hex[:8]}"
    created = await api.create("incoming-call-policy", acme.owner, {"name": name})
    item = await api.post(f"/api/incoming-call-policy/{created['_id']}/get-item", acme.owner, {"select": {
        "greetingMessage": True, "noAnswerMessage": True, "noOneAvailableMessage": True, "isEnabled": True,
        "repeatPolicyIfNoOneAnswers": True, "repeatPolicyIfNoOneAnswersTimes": True, "slug": True}})
    assert item["greetingMessage"] == "Please wait while we connect you to the on-call engineer."
    assert item["noAnswerMessage"] == "No one is available. Please try again later."
    assert item["noOneAvailableMessage"] == ("We are sorry, but no on-call engineer is currently available. "
                                             "Please try again later or contact support.")
    assert item["isEnabled"] is True
    assert item["repeatPolicyIfNoOneAnswers"] is False
    assert item["repeatPolicyIfNoOneAnswersTimes"] == 1
    assert item["slug"] == f"defaults-{name[-8:]}"


# -- Incoming Call Log ----------------------------------------------------------------

LOG_SELECT = {"incomingCallPolicyId": True, "projectId": True, "status": True, "_id": True, "answeredByUser": True}


async def _log(api, tenant, **fields):
    now = dt.datetime.utcnow()
    return await IncomingCallLog.acreate(project=tenant.project_id, startedAt=now, **fields)


async def test_incoming_call_log_list_example(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    user = await User.acreate(project=acme.project_id, name="Alice", email="alice@example.com")
    for _ in range(3):
        await _log(api, acme, incomingCallPolicyId=policy["_id"], status="Completed", answeredByUserId=user.id)
    await _log(api, acme, incomingCallPolicyId=policy["_id"], status="NoAnswer")
    listed = await api.post("/api/incoming-call-log/get-list", acme.owner,
                            {"select": LOG_SELECT, "query": {"status": "Completed"}, "sort": {"createdAt": -1}},
                            params={"skip": "0", "limit": "10"})
    assert listed["count"] == 3 and len(listed["data"]) == 3
    for row in listed["data"]:
        assert set(row) == {"_id", "incomingCallPolicyId", "projectId", "status", "answeredByUser"}
        assert row["incomingCallPolicyId"] == policy["_id"]
        assert row["projectId"] == acme.project_id
        assert row["status"] == "Completed"
        assert row["answeredByUser"]["_id"] == str(user.id)
        assert row["answeredByUser"]["name"] == "Alice"


async def test_incoming_call_log_get_item_and_count_examples(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    log = await _log(api, acme, incomingCallPolicyId=policy["_id"], status="NoAnswer")
    item = await api.post(f"/api/incoming-call-log/{log.id}/get-item", acme.owner, {"select": LOG_SELECT})
    assert item == {"_id": str(log.id), "incomingCallPolicyId": policy["_id"], "projectId": acme.project_id,
                    "status": "NoAnswer", "answeredByUser": None}
    assert await api.post("/api/incoming-call-log/count", acme.owner,
                          {"query": {"status": "NoAnswer"}}) == {"count": 1}


@pytest.mark.parametrize("resource", ["incoming-call-log", "incoming-call-log-item", "call-log"])
async def test_logs_cannot_be_written(api, acme, resource):
    status, body = await api.call("POST", f"/api/{resource}", acme.owner, {"data": {}}, expect=None)
    assert (status, body) == (405, {"error": "This resource cannot be created via the API"})
    some_id = str(uuid.uuid4())
    for method, suffix in (("PUT", ""), ("POST", "/update-item"), ("GET", "/update-item")):
        status, body = await api.call(method, f"/api/{resource}/{some_id}{suffix}", acme.owner,
                                      {"data": {"status": "Completed"}}, expect=None)
        assert (status, body) == (405, {"error": "This resource cannot be updated via the API"})
    for method, suffix in (("DELETE", ""), ("POST", "/delete-item"), ("GET", "/delete-item")):
        status, body = await api.call(method, f"/api/{resource}/{some_id}{suffix}", acme.owner, expect=None)
        assert (status, body) == (405, {"error": "This resource cannot be deleted via the API"})


async def test_deleting_a_policy_keeps_its_logs(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    user = await api.create("user", acme.owner, {"name": "Alice"})
    rule = await api.create("incoming-call-policy-escalation-rule", acme.owner,
                            {"incomingCallPolicyId": policy["_id"], "userId": user["_id"]})
    log = await _log(api, acme, incomingCallPolicyId=policy["_id"], status="Completed")
    await api.call("DELETE", f"/api/incoming-call-policy/{policy['_id']}", acme.owner)
    await api.post(f"/api/incoming-call-policy-escalation-rule/{rule['_id']}/get-item", acme.owner, expect=404)
    kept = await api.post(f"/api/incoming-call-log/{log.id}/get-item", acme.owner,
                          {"select": {"incomingCallPolicyId": True, "incomingCallPolicy": True}})
    assert kept["incomingCallPolicyId"] == policy["_id"]  # still says which policy it was
    assert kept["incomingCallPolicy"] is None             # which no longer exists


# -- Call Log -------------------------------------------------------------------------

CALL_LOG_SELECT = {"callCostInUSDCents": True, "callData": True, "fromNumber": True, "projectId": True,
                   "status": True}


async def test_call_log_examples(api, acme):
    for _ in range(3):
        await CallLog.acreate(project=acme.project_id, toNumber="+15559998888", fromNumber="+15559998888",
                              callData={"message": "Alert notification", "incidentId": "123"},
                              status="Success", callCostInUSDCents=150)
    await CallLog.acreate(project=acme.project_id, toNumber="+15559998888", callData={}, status="Busy")
    listed = await api.post("/api/call-log/get-list", acme.owner,
                            {"select": CALL_LOG_SELECT, "query": {"status": "Success"}, "sort": {"createdAt": -1}},
                            params={"skip": "0", "limit": "10"})
    assert listed["count"] == 3
    row = listed["data"][0]
    assert set(row) == {"_id"} | set(CALL_LOG_SELECT)
    assert row["callCostInUSDCents"] == 150
    assert row["callData"] == {"message": "Alert notification", "incidentId": "123"}
    assert row["fromNumber"] == "+15559998888"
    assert row["projectId"] == acme.project_id
    item = await api.post(f"/api/call-log/{row['_id']}/get-item", acme.owner, {"select": CALL_LOG_SELECT})
    assert item == row
    assert await api.post("/api/call-log/count", acme.owner, {"query": {"status": "Success"}}) == {"count": 3}
