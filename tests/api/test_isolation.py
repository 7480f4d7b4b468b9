"""Tenant isolation: a key never sees or touches another project's rows (DESIGN.md, HTTP API conventions).

Project B (the victim) has a row of every resource, the logs inserted through the
models as the call engine writes them. A key of project A with the strongest role
(Project Owner) tries every verb of every resource against B's ids. Every test
snapshots all of B's data through B's own key before and after its attempts and
asserts that nothing changed, byte for byte.
"""

from __future__ import annotations

import pytest

from api.registry import BY_PATH, RESOURCES
from api.resources import SCHEMAS
from ivr.store.models import (
    CallLog,
    CallMenu,
    CallMenuAgent,
    CrmTicket,
    IncomingCallLog,
    IncomingCallLogItem,
    IncomingCallPolicyLabel,
)
from tests.api.conftest import new_id
from tests.api.factories import LOGS, Graph, account_sid, build_graph, snapshot, token, unique_phone

PATHS = [r.path for r in RESOURCES]
VERBS = ("get-item", "update", "delete", "get-list", "count", "create", "relation-select")
MATRIX = [pytest.param(path, verb, id=f"{path}:{verb}") for path in PATHS for verb in VERBS]

# One victim and one attacker per database, built once: the tests only ever read B, and each
# test proves it (a test that changed B fails itself, whatever ran before it).
_WORLDS: dict[str, tuple[Graph, Graph]] = {}


@pytest.fixture
async def world(api, database_url) -> tuple[Graph, Graph]:
    """(A, B): the attacker's project and the victim's, each with a row of every resource."""
    if database_url not in _WORLDS:
        victim = await build_graph(api, "Victim B")
        attacker = await build_graph(api, "Attacker A")
        await _cross_links(attacker, victim)
        _WORLDS[database_url] = (attacker, victim)
    return _WORLDS[database_url]


async def _cross_links(a: Graph, b: Graph) -> None:
    """Rows of A that point at B's objects, as a corrupt import or a bug elsewhere could leave them:
    selecting their relations must still never reveal B's rows."""
    log = await IncomingCallLog.acreate(project=a.project_id, incomingCallPolicyId=b["policy"],
                                        answeredByUserId=b["user"], status="Completed")
    item = await IncomingCallLogItem.acreate(project=a.project_id, incomingCallLog=log.id,
                                             incomingCallPolicyEscalationRuleId=b["rule"], userId=b["user"],
                                             status="NoAnswer")
    call = await CallLog.acreate(project=a.project_id, toNumber=unique_phone(), user=b["user"], teamId=b["team"],
                                 status="Missed Call")
    await IncomingCallPolicyLabel.acreate(incomingCallPolicy=a["policy"], label=b["label"])
    menu = await CallMenu.acreate(project=a.project_id, name=f"Corrupt {token()}", parent=b["menu"],
                                  redirectionMenu=b["menu"], incomingCallPolicy=b["policy"],
                                  outboundPhoneNumber=b["outbound"])
    agent = await CallMenuAgent.acreate(project=a.project_id, callMenu=a["menu_queue"], user=b["user2"])
    ticket = await CrmTicket.acreate(project=a.project_id, ticketId=f"T-corrupt-{token()}", endUser=b["end_user"])
    for path, row in (("incoming-call-log", log), ("incoming-call-log-item", item), ("call-log", call),
                      ("call-menu", menu), ("call-menu-agent", agent), ("crm-ticket", ticket)):
        a.ids[path].append(str(row.id))


@pytest.fixture
async def guarded(api, world):
    """Yields (A, B) and then asserts that B's data is byte-for-byte what it was before the test."""
    a, b = world
    before = await snapshot(api, b.key)
    assert b["policy"] in before and b["log"] in before  # the snapshot really holds B's rows
    yield a, b
    after = await snapshot(api, b.key)
    assert after == before, "project B's data changed through project A's key"


def _error(payload) -> str:
    assert isinstance(payload, dict) and set(payload) == {"error"} and isinstance(payload["error"], str), payload
    return payload["error"]


# -- valid request bodies, so that only the project can be the reason for a refusal ------------------


def update_data(path: str) -> dict:
    return {
        "incoming-call-policy": {"name": "Hijacked", "isEnabled": False},
        "incoming-call-policy-escalation-rule": {"name": "Hijacked", "escalateAfterSeconds": 5},
        "user": {"name": "Mallory"},
        "user-incoming-call-number": {"sipUri": "sip:mallory@10.6.6.6"},
        "team": {"name": "Hijacked"},
        "team-member": {},
        "label": {"name": f"hijacked-{token()}"},
        "on-call-duty-policy-schedule": {"name": f"Hijacked {token()}"},
        "on-call-duty-policy-schedule-layer": {"name": "Hijacked", "rotationIntervalCount": 3},
        "on-call-duty-policy-schedule-layer-user": {"order": 1},
        "on-call-duty-policy-schedule-override": {"description": "Hijacked"},
        "incoming-call-log": {"status": "Failed"},
        "incoming-call-log-item": {"status": "Failed"},
        "call-log": {"status": "Error"},
        "outbound-phone-number": {"name": "Hijacked", "isDefault": True},
        "call-menu": {"name": "Hijacked", "state": "manual_redirection"},
        "call-menu-agent": {"groupNumber": 2},
        "end-user": {"name": "Mallory", "phoneNumber": unique_phone()},
        "crm-ticket": {"url": "https://evil.example.com/"},
        "project-call-sms-config": {"name": "Hijacked", "twilioAuthToken": "hijacked0token"},
    }[path]


async def create_data(api, a: Graph, path: str) -> dict:
    """Valid data for a new row of ``path`` in project A (creating what it needs first)."""
    if path == "incoming-call-policy":
        return {"name": f"New {token()}", "labels": [a["label"]]}
    if path == "incoming-call-policy-escalation-rule":
        return {"incomingCallPolicyId": a["policy"], "userId": a["user"]}
    if path == "user":
        return {"name": "Carol", "email": f"carol-{token()}@example.com"}
    if path == "user-incoming-call-number":
        return {"userId": a["user"], "phoneNumber": unique_phone()}
    if path == "team":
        return {"name": f"Team {token()}"}
    if path == "team-member":
        user = await api.create("user", a.key, {"name": "Dave"})
        return {"teamId": a["team"], "userId": user["_id"]}
    if path == "label":
        return {"name": f"label-{token()}"}
    if path == "on-call-duty-policy-schedule":
        return {"name": f"Schedule {token()}"}
    if path == "on-call-duty-policy-schedule-layer":
        return {"onCallDutyPolicyScheduleId": a["schedule"], "startsAt": "2024-02-01T00:00:00Z"}
    if path == "on-call-duty-policy-schedule-layer-user":
        return {"onCallDutyPolicyScheduleLayerId": a["layer"], "userId": a["user2"]}
    if path == "on-call-duty-policy-schedule-override":
        return {"onCallDutyPolicyScheduleId": a["schedule"], "userId": a["user"],
                "startsAt": "2024-02-01T00:00:00Z", "endsAt": "2024-02-02T00:00:00Z"}
    if path == "outbound-phone-number":
        return {"phoneNumber": unique_phone(), "isDefault": True}
    if path == "call-menu":
        return {"name": f"Menu {token()}", "parentId": a["menu"]}
    if path == "call-menu-agent":
        user = await api.create("user", a.key, {"name": "Agent", "isAgent": True})
        return {"callMenuId": a["menu_queue"], "userId": user["_id"]}
    if path == "end-user":
        return {"name": "Carol", "phoneNumber": unique_phone()}
    if path == "crm-ticket":
        return {"ticketId": f"T-{token()}", "endUserId": a["end_user"]}
    if path == "project-call-sms-config":
        return {"name": "Mine", "twilioAccountSID": account_sid(), "twilioAuthToken": token(),
                "twilioPrimaryPhoneNumber": unique_phone()}
    return {"status": "Completed"}  # logs: refused before the data is looked at


# -- the matrix ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "verb"), MATRIX)
async def test_other_project_is_invisible(api, guarded, path, verb):
    a, b = guarded
    resource = BY_PATH[path]
    await ATTEMPTS[verb](api, a, b, resource)


async def _get_item(api, a, b, resource):
    for item_id in b.ids[resource.path]:
        for method in ("POST", "GET"):
            url = f"/api/{resource.path}/{item_id}/get-item"
            status, payload = await api.call(method, url, a.key, {"select": {"_id": True}}, expect=None)
            assert status == 404, f"{method} {url} with A's key -> {status} {payload} (want 404, not 403)"
            assert item_id in _error(payload)


async def _update(api, a, b, resource):
    expected = 404 if resource.writable else 405
    for item_id in b.ids[resource.path]:
        for method, url in (("PUT", f"/api/{resource.path}/{item_id}"),
                            ("POST", f"/api/{resource.path}/{item_id}/update-item"),
                            ("GET", f"/api/{resource.path}/{item_id}/update-item")):
            status, payload = await api.call(method, url, a.key, {"data": update_data(resource.path)}, expect=None)
            assert status == expected, f"{method} {url} with A's key -> {status} {payload} (want {expected})"
            message = _error(payload)
            if not resource.writable:
                assert message == "This resource cannot be updated via the API"


async def _delete(api, a, b, resource):
    expected = 404 if resource.writable else 405
    for item_id in b.ids[resource.path]:
        for method, url in (("DELETE", f"/api/{resource.path}/{item_id}"),
                            ("POST", f"/api/{resource.path}/{item_id}/delete-item"),
                            ("GET", f"/api/{resource.path}/{item_id}/delete-item")):
            status, payload = await api.call(method, url, a.key, None, expect=None)
            assert status == expected, f"{method} {url} with A's key -> {status} {payload} (want {expected})"
            message = _error(payload)
            if not resource.writable:
                assert message == "This resource cannot be deleted via the API"


def queries_by_b(resource, b: Graph) -> list[tuple[dict, bool]]:
    """Queries that would select B's rows if the project were not forced, each with whether it must
    match nothing at all (``strict``). A query on a reference field (userId, teamId, ...) with B's ids
    may match A's own rows that point at B (the logs of ``_cross_links``), never B's rows."""
    own = b.ids[resource.path]
    everything = sorted(b.all_ids())
    queries = [({"_id": item_id}, True) for item_id in own]
    queries += [
        ({"_id": own}, True),
        ({"_id": {"_type": "EqualTo", "value": own[0]}}, True),
        ({"_id": {"_type": "Includes", "value": own}}, True),
        ({"projectId": b.project_id}, True),
        ({"projectId": {"_type": "EqualTo", "value": b.project_id}}, True),
        ({"projectId": [b.project_id], "_id": own}, True),
    ]
    for name, api_field in resource.schema.fields.items():
        if api_field.kind == "id" and name not in ("_id", "projectId"):
            queries.append(({name: everything}, False))  # B's policy, users, team, rule, log... any it names
            queries.append(({name: everything, "_id": own}, True))
        if api_field.textual and api_field.kind != "enum":
            queries.append(({name: {"_type": "Search", "value": b.token}}, True))  # B's names, emails, call ids
    return queries


async def _get_list(api, a, b, resource):
    b_ids = b.all_ids()
    for query, strict in queries_by_b(resource, b):
        for method in ("POST", "GET"):
            url = f"/api/{resource.path}/get-list"
            page = await api.call(method, url, a.key, {"query": query, "select": {"projectId": True}},
                                  params={"limit": "100"})
            where = f"{method} {url} query={query} -> {page}"
            assert page["count"] == len(page["data"]), where
            assert all(row["projectId"] == a.project_id and row["_id"] not in b_ids for row in page["data"]), where
            if strict:
                assert page["count"] == 0, where


async def _count(api, a, b, resource):
    for query, strict in queries_by_b(resource, b):
        listed = await api.post(f"/api/{resource.path}/get-list", a.key, {"query": query}, params={"limit": "100"})
        expected = 0 if strict else len(listed["data"])  # A's own rows only (checked by get-list)
        for method in ("POST", "GET"):
            url = f"/api/{resource.path}/count"
            counted = await api.call(method, url, a.key, {"query": query})
            assert counted == {"count": expected}, f"{method} {url} query={query} -> {counted}"


async def _create(api, a, b, resource):
    """projectId = B in the data: the row lands in A (or, for a log, nothing is created at all)."""
    data = {**await create_data(api, a, resource.path), "projectId": b.project_id}
    status, payload = await api.call("POST", f"/api/{resource.path}", a.key, {"data": data}, expect=None)
    if not resource.writable:
        assert status == 405, payload
        assert _error(payload) == "This resource cannot be created via the API"
        return
    assert status == 200, payload
    assert payload["projectId"] == a.project_id
    row = await api.post(f"/api/{resource.path}/{payload['_id']}/get-item", a.key, {"select": {"projectId": True}})
    assert row == {"_id": payload["_id"], "projectId": a.project_id}
    status, _ = await api.call("POST", f"/api/{resource.path}/{payload['_id']}/get-item", b.key, {}, expect=None)
    assert status == 404


async def _relation_select(api, a, b, resource):
    """A's rows, some of which point at B's objects: every expanded relation is A's or nothing."""
    b_ids = b.all_ids()
    select = {name: True for name in resource.schema.fields}
    select.update({name: True for name in resource.schema.relations})
    page = await api.post(f"/api/{resource.path}/get-list", a.key, {"select": select}, params={"limit": "100"})
    assert page["count"] >= len(a.ids[resource.path]) >= 1
    rows = list(page["data"])
    for item_id in a.ids[resource.path]:
        rows.append(await api.post(f"/api/{resource.path}/{item_id}/get-item", a.key, {"select": select}))
    for row in rows:
        assert row["projectId"] == a.project_id
        assert row["project"]["_id"] == a.project_id  # relations do expand (the check is not vacuous)
        for name, relation in resource.schema.relations.items():
            value = row[name]
            related = value if isinstance(value, list) else [value] if value is not None else []
            for obj in related:
                assert obj["_id"] not in b_ids, f"{resource.path}.{name} exposes B's row {obj}"
                if "projectId" in obj:
                    assert obj["projectId"] == a.project_id, f"{resource.path}.{name}: {obj}"
            if relation.id_field and row.get(relation.id_field) in b_ids:
                assert value is None, f"{resource.path}.{name} of a row pointing at B: {value}"
    # Sub-field selects take the same path as whole objects.
    sub = {name: {"_id": True, "name": True} if "name" in _target_fields(resource, name) else {"_id": True}
           for name in resource.schema.relations}
    page = await api.post(f"/api/{resource.path}/get-list", a.key, {"select": sub}, params={"limit": "100"})
    for row in page["data"]:
        for name in resource.schema.relations:
            value = row[name]
            related = value if isinstance(value, list) else [value] if value is not None else []
            assert not {obj["_id"] for obj in related} & b_ids, f"{resource.path}.{name} exposes B: {value}"


def _target_fields(resource, relation_name: str) -> set[str]:
    return set(SCHEMAS[resource.schema.relations[relation_name].target].fields)


ATTEMPTS = {
    "get-item": _get_item,
    "update": _update,
    "delete": _delete,
    "get-list": _get_list,
    "count": _count,
    "create": _create,
    "relation-select": _relation_select,
}
assert set(ATTEMPTS) == set(VERBS)


# -- writes of A that name B's objects: 400, and nothing of B changes ----------------------------------

CROSS_CREATE = [
    ("incoming-call-policy-escalation-rule", "incomingCallPolicyId",
     lambda a, b: {"incomingCallPolicyId": b["policy"], "userId": a["user"]}),
    ("incoming-call-policy-escalation-rule", "userId",
     lambda a, b: {"incomingCallPolicyId": a["policy"], "userId": b["user"]}),
    ("incoming-call-policy-escalation-rule", "teamId",
     lambda a, b: {"incomingCallPolicyId": a["policy"], "teamId": b["team"]}),
    ("user-incoming-call-number", "userId",
     lambda a, b: {"userId": b["user"], "phoneNumber": unique_phone()}),
    ("team-member", "teamId", lambda a, b: {"teamId": b["team"], "userId": a["user2"]}),
    ("team-member", "userId", lambda a, b: {"teamId": a["team"], "userId": b["user"]}),
    ("incoming-call-policy", "labels", lambda a, b: {"name": f"P {token()}", "labels": [b["label"]]}),
    ("incoming-call-policy", "labels", lambda a, b: {"name": f"P {token()}", "labels": [a["label"], b["label2"]]}),
    ("incoming-call-policy", "createdByUserId", lambda a, b: {"name": f"P {token()}", "createdByUserId": b["user"]}),
    ("incoming-call-policy-escalation-rule", "onCallDutyPolicyScheduleId",
     lambda a, b: {"incomingCallPolicyId": a["policy"], "onCallDutyPolicyScheduleId": b["schedule"]}),
    ("on-call-duty-policy-schedule-layer", "onCallDutyPolicyScheduleId",
     lambda a, b: {"onCallDutyPolicyScheduleId": b["schedule"], "startsAt": "2024-02-01T00:00:00Z"}),
    ("on-call-duty-policy-schedule-layer-user", "onCallDutyPolicyScheduleLayerId",
     lambda a, b: {"onCallDutyPolicyScheduleLayerId": b["layer"], "userId": a["user"]}),
    ("on-call-duty-policy-schedule-layer-user", "userId",
     lambda a, b: {"onCallDutyPolicyScheduleLayerId": a["layer"], "userId": b["user"]}),
    ("on-call-duty-policy-schedule-override", "onCallDutyPolicyScheduleId",
     lambda a, b: {"onCallDutyPolicyScheduleId": b["schedule"], "userId": a["user"],
                   "startsAt": "2024-02-01T00:00:00Z", "endsAt": "2024-02-02T00:00:00Z"}),
    ("on-call-duty-policy-schedule-override", "userId",
     lambda a, b: {"onCallDutyPolicyScheduleId": a["schedule"], "userId": b["user"],
                   "startsAt": "2024-02-01T00:00:00Z", "endsAt": "2024-02-02T00:00:00Z"}),    ("call-menu", "parentId", lambda a, b: {"name": f"M {token()}", "parentId": b["menu"]}),
    ("call-menu", "redirectionMenuId", lambda a, b: {"name": f"M {token()}", "redirectionMenuId": b["menu"]}),
    ("call-menu", "incomingCallPolicyId", lambda a, b: {"name": f"M {token()}", "incomingCallPolicyId": b["policy"]}),
    ("call-menu", "outboundPhoneNumberId",
     lambda a, b: {"name": f"M {token()}", "outboundPhoneNumberId": b["outbound"]}),
    ("call-menu-agent", "callMenuId", lambda a, b: {"callMenuId": b["menu_queue"], "userId": a["user2"]}),
    ("call-menu-agent", "userId", lambda a, b: {"callMenuId": a["menu_queue"], "userId": b["user2"]}),
    ("crm-ticket", "endUserId", lambda a, b: {"ticketId": f"T-{token()}", "endUserId": b["end_user"]}),
]


@pytest.mark.parametrize(("path", "field", "make"), [
    pytest.param(path, field, make, id=f"{path}:create:{field}:{i}") for i, (path, field, make) in enumerate(CROSS_CREATE)])
async def test_create_referencing_other_project_is_400(api, guarded, path, field, make):
    a, b = guarded
    count_before = (await api.post(f"/api/{path}/count", a.key, {}))["count"]
    status, payload = await api.call("POST", f"/api/{path}", a.key, {"data": make(a, b)}, expect=None)
    assert status == 400, f"create {path} with B's {field} -> {status} {payload}"
    assert field in _error(payload)
    assert (await api.post(f"/api/{path}/count", a.key, {}))["count"] == count_before


CROSS_UPDATE = [
    ("incoming-call-policy-escalation-rule", "rule", "userId", lambda b: {"userId": b["user"]}),
    ("incoming-call-policy-escalation-rule", "rule2", "teamId", lambda b: {"teamId": b["team"]}),
    ("incoming-call-policy", "policy", "labels", lambda b: {"labels": [b["label"], b["label2"]]}),
    ("incoming-call-policy", "policy", "createdByUserId", lambda b: {"createdByUserId": b["user"]}),
    ("incoming-call-policy", "policy", "projectId", lambda b: {"projectId": b.project_id}),
    ("user", "user", "projectId", lambda b: {"projectId": b.project_id}),
    ("team-member", "member", "teamId", lambda b: {"teamId": b["team"]}),
    ("user-incoming-call-number", "number", "userId", lambda b: {"userId": b["user"]}),
    ("incoming-call-policy-escalation-rule", "rule3", "onCallDutyPolicyScheduleId",
     lambda b: {"onCallDutyPolicyScheduleId": b["schedule"]}),
    ("on-call-duty-policy-schedule-layer-user", "layer_user", "userId", lambda b: {"userId": b["user"]}),
    ("on-call-duty-policy-schedule-override", "override", "userId", lambda b: {"userId": b["user"]}),    ("call-menu", "menu_queue", "parentId", lambda b: {"parentId": b["menu"]}),
    ("call-menu", "menu_queue", "redirectionMenuId", lambda b: {"redirectionMenuId": b["menu"]}),
    ("call-menu", "menu_policy", "incomingCallPolicyId", lambda b: {"incomingCallPolicyId": b["policy"]}),
    ("call-menu", "menu", "outboundPhoneNumberId", lambda b: {"outboundPhoneNumberId": b["outbound"]}),
    ("crm-ticket", "ticket", "endUserId", lambda b: {"endUserId": b["end_user"]}),
    ("end-user", "end_user", "projectId", lambda b: {"projectId": b.project_id}),
]


@pytest.mark.parametrize(("path", "row", "field", "make"), [
    pytest.param(path, row, field, make, id=f"{path}:update:{field}") for path, row, field, make in CROSS_UPDATE])
async def test_update_referencing_other_project_is_400(api, guarded, path, row, field, make):
    a, b = guarded
    select = {name: True for name in BY_PATH[path].schema.fields}
    if path == "incoming-call-policy":
        select["labels"] = {"_id": True}
    before = await api.post(f"/api/{path}/{a[row]}/get-item", a.key, {"select": select})
    status, payload = await api.call("PUT", f"/api/{path}/{a[row]}", a.key, {"data": make(b)}, expect=None)
    assert status == 400, f"update {path} with B's {field} -> {status} {payload}"
    assert field in _error(payload)
    assert await api.post(f"/api/{path}/{a[row]}/get-item", a.key, {"select": select}) == before


# -- unknown ids behave exactly like B's ids: a 404 tells nothing about other projects ---------------


@pytest.mark.parametrize("path", [p for p in PATHS if p not in LOGS])
async def test_unknown_and_foreign_ids_answer_alike(api, guarded, path):
    a, b = guarded
    foreign, unknown = b.ids[path][0], new_id()
    answers = []
    for item_id in (foreign, unknown):
        status, payload = await api.call("POST", f"/api/{path}/{item_id}/get-item", a.key, {}, expect=None)
        answers.append((status, _error(payload).replace(item_id, "<id>")))
    assert answers[0] == answers[1]
