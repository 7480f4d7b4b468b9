"""Who may do what: roles, fine-grained permissions, expiry and the per-key rate limit.

The expectations are computed here from the documented rules (DESIGN.md), not from
``api.auth``: Project Owner, Admin and Member may do everything; Project Viewer and
"Read All Project Resources" may only read; "<Verb> <Resource title>" grants that
verb on that resource only. A denial is a 403 whose message lists everything that
would allow the request. The logs are read-only for every key: a write answers 405.
"""

from __future__ import annotations

import datetime as dt

import pytest

from api.app import create_app
from api.registry import BY_PATH, RESOURCES
from api.resources import SCHEMA_TITLES
from ivr.config import load_config
from ivr.store.db import open_database
from ivr.store.models import Role
from tests.api.conftest import ApiClient
from tests.api.factories import LOGS, Graph, account_sid, build_graph, token, unique_phone

READ_ALL = "Read All Project Resources"
WORDS = {"read": "Read", "create": "Create", "update": "Edit", "delete": "Delete"}
OPS = {"get-list": "read", "get-item": "read", "count": "read", "create": "create", "update": "update",
       "delete": "delete"}
WRITERS = {Role.OWNER, Role.ADMIN, Role.MEMBER}
TITLES = [r.title for r in RESOURCES]


def principal_params():
    params = [pytest.param(role, (), id=role.value) for role in Role]
    params.append(pytest.param(None, (READ_ALL,), id=READ_ALL))
    params.append(pytest.param(None, (), id="no role, no permission"))
    params.append(pytest.param(None, ("Read Everything", "Admin", "read incoming call policy"), id="unknown permissions"))
    params += [pytest.param(None, (f"{word} {title}",), id=f"{word} {title}")
               for title in TITLES for word in WORDS.values()]
    params.append(pytest.param(Role.VIEWER, ("Create Label", "Delete Team"), id="Viewer + Create Label + Delete Team"))
    return params


def allowed(role: Role | None, permissions: tuple[str, ...], verb: str, title: str) -> bool:
    if role in WRITERS:
        return True
    if verb == "read" and (role == Role.VIEWER or READ_ALL in permissions):
        return True
    return f"{WORDS[verb]} {title}" in permissions


def allowers(verb: str, title: str) -> set[str]:
    """Every role and permission that grants ``verb`` on ``title``: what a 403 must name."""
    names = {Role.OWNER.value, Role.ADMIN.value, Role.MEMBER.value, f"{WORDS[verb]} {title}"}
    if verb == "read":
        names |= {Role.VIEWER.value, READ_ALL}
    return names


def listed_in(message: str) -> set[str]:
    """The names a denial lists: "... needs one of: A, B, C"."""
    assert ": " in message, message
    return {part.strip().rstrip(".") for part in message.rsplit(": ", 1)[1].split(", ")}


# A project per database with a row of everything; each test adds its own key to it.
_PROJECTS: dict[str, Graph] = {}


@pytest.fixture
async def project(api, database_url) -> Graph:
    if database_url not in _PROJECTS:
        _PROJECTS[database_url] = await build_graph(api, "Permissions")
    return _PROJECTS[database_url]


async def disposable(api, graph: Graph, path: str) -> str:
    """A new row of ``path`` (made with the owner key) that a test may delete."""
    key = graph.key
    if path == "incoming-call-policy":
        data = {"name": f"Disposable {token()}"}
    elif path == "incoming-call-policy-escalation-rule":
        data = {"incomingCallPolicyId": graph["policy"], "userId": graph["user2"]}
    elif path == "user":
        data = {"name": "Temp"}
    elif path == "user-incoming-call-number":
        data = {"userId": graph["user2"], "phoneNumber": unique_phone()}
    elif path == "team":
        data = {"name": f"Temp {token()}"}
    elif path == "team-member":
        user = await api.create("user", key, {"name": "Temp member"})
        data = {"teamId": graph["team"], "userId": user["_id"]}
    elif path == "label":
        data = {"name": f"temp-{token()}"}
    elif path == "call-menu":
        data = {"name": f"Temp {token()}"}
    elif path == "call-menu-agent":
        user = await api.create("user", key, {"name": "Temp agent", "isAgent": True})
        data = {"callMenuId": graph["menu_queue"], "userId": user["_id"]}
    elif path == "end-user":
        data = {"name": "Temp"}
    elif path == "crm-ticket":
        data = {"ticketId": f"T-{token()}", "endUserId": graph["end_user2"]}
    elif path == "outbound-phone-number":
        data = {"phoneNumber": unique_phone()}
    elif path == "project-call-sms-config":
        data = await create_data(api, graph, path)
    elif path in SCHEDULE_PARTS:
        data = await create_data(api, graph, path)
    else:
        raise AssertionError(path)
    return (await api.create(path, key, data))["_id"]


async def create_data(api, graph: Graph, path: str) -> dict:
    if path == "team-member":
        user = await api.create("user", graph.key, {"name": "New member"})
        return {"teamId": graph["team"], "userId": user["_id"]}
    if path == "call-menu-agent":
        user = await api.create("user", graph.key, {"name": "New agent", "isAgent": True})
        return {"callMenuId": graph["menu_queue"], "userId": user["_id"], "groupNumber": 2}
    return {
        "outbound-phone-number": {"phoneNumber": unique_phone(), "name": "Created"},
        "project-call-sms-config": {"name": "Created", "twilioAccountSID": account_sid(), "twilioAuthToken": token(),
                                    "twilioPrimaryPhoneNumber": unique_phone()},
        "call-menu": {"name": f"Created {token()}", "parentId": graph["menu"], "languages": ["de"]},
        "end-user": {"name": "Created", "phoneNumber": unique_phone()},
        "crm-ticket": {"ticketId": f"T-{token()}", "endUserId": graph["end_user"]},
        "incoming-call-policy": {"name": f"Created {token()}"},
        "incoming-call-policy-escalation-rule": {"incomingCallPolicyId": graph["policy"], "teamId": graph["team"]},
        "user": {"name": "Created"},
        "user-incoming-call-number": {"userId": graph["user"], "sipUri": "sip:created@10.0.0.9"},
        "team": {"name": f"Created {token()}"},
        "label": {"name": f"created-{token()}"},
        "on-call-duty-policy-schedule": {"name": f"Created {token()}", "timeZone": "Asia/Tokyo"},
        "on-call-duty-policy-schedule-layer": {"onCallDutyPolicyScheduleId": graph["schedule"],
                                               "startsAt": "2024-06-01T00:00:00Z"},
        "on-call-duty-policy-schedule-layer-user": {"onCallDutyPolicyScheduleLayerId": graph["layer"],
                                                    "userId": graph["user2"]},
        "on-call-duty-policy-schedule-override": {"onCallDutyPolicyScheduleId": graph["schedule"],
                                                  "userId": graph["user"], "startsAt": "2024-06-01T00:00:00Z",
                                                  "endsAt": "2024-06-01T12:00:00Z"},
    }.get(path, {"status": "Completed"})  # logs: refused whatever the data


SCHEDULE_PARTS = ("on-call-duty-policy-schedule", "on-call-duty-policy-schedule-layer",
                  "on-call-duty-policy-schedule-layer-user", "on-call-duty-policy-schedule-override")


UPDATES = {
    "incoming-call-policy": ("policy", {"description": "Edited"}),
    "incoming-call-policy-escalation-rule": ("rule", {"escalateAfterSeconds": 25}),
    "user": ("user2", {"timeZone": "Europe/London"}),
    "user-incoming-call-number": ("number2", {"sipUri": "sip:bob@10.0.0.5:5060"}),
    "team": ("team", {"description": "Edited"}),
    "team-member": ("member", {}),
    "label": ("label2", {"color": "#00ff00"}),
    "on-call-duty-policy-schedule": ("schedule", {"description": "Edited"}),
    "on-call-duty-policy-schedule-layer": ("layer2", {"rotationIntervalCount": 2}),
    "on-call-duty-policy-schedule-layer-user": ("layer_user2", {"order": 2}),
    "on-call-duty-policy-schedule-override": ("override", {"description": "Edited"}),
    "incoming-call-log": ("log", {"status": "Failed"}),
    "incoming-call-log-item": ("log_item", {"status": "Failed"}),
    "call-log": ("call_log", {"status": "Error"}),
    "outbound-phone-number": ("outbound2", {"name": "Edited"}),
    "call-menu": ("menu_queue", {"outputMessage": "Edited", "cascadeGroupDelaySeconds": 20}),
    "call-menu-agent": ("menu_agent", {"groupNumber": 1}),
    "end-user": ("end_user2", {"outContactId": "edited"}),
    "crm-ticket": ("ticket", {"url": "https://crm.example.com/edited"}),
    "project-call-sms-config": ("sms_config", {"description": "Edited"}),
}


async def attempt(api, graph: Graph, key: str, path: str, op: str, will_succeed: bool):
    """Performs ``op`` on ``path``; returns (status, payload)."""
    base = f"/api/{path}"
    if op == "get-list":
        return await api.call("POST", f"{base}/get-list", key, {"select": {"_id": True}}, expect=None)
    if op == "count":
        return await api.call("POST", f"{base}/count", key, {}, expect=None)
    if op == "get-item":
        return await api.call("POST", f"{base}/{graph.ids[path][0]}/get-item", key, {}, expect=None)
    if op == "create":
        data = await create_data(api, graph, path) if will_succeed else {"name": "never created"}
        return await api.call("POST", base, key, {"data": data}, expect=None)
    if op == "update":
        row, data = UPDATES[path]
        return await api.call("PUT", f"{base}/{graph[row]}", key, {"data": data}, expect=None)
    if op == "delete":
        target = await disposable(api, graph, path) if will_succeed else graph.ids[path][0]
        return await api.call("DELETE", f"{base}/{target}", key, None, expect=None)
    raise AssertionError(op)


@pytest.mark.parametrize(("role", "permissions"), principal_params())
async def test_permission_matrix(api, project, role, permissions):
    key = await api.key(project.project_id, role=role, permissions=permissions)
    failures = []
    for resource in RESOURCES:
        for op, verb in OPS.items():
            where = f"{resource.path} {op}"
            if verb != "read" and not resource.writable:
                status, payload = await attempt(api, project, key, resource.path, op, False)
                participle = {"create": "created", "update": "updated", "delete": "deleted"}[verb]
                want = {"error": f"This resource cannot be {participle} via the API"}
                if (status, payload) != (405, want):
                    failures.append(f"{where}: {status} {payload}, want 405 {want}")
                continue
            ok = allowed(role, permissions, verb, resource.title)
            status, payload = await attempt(api, project, key, resource.path, op, ok)
            if ok:
                if status != 200:
                    failures.append(f"{where}: {status} {payload}, want 200")
                continue
            if status != 403:
                failures.append(f"{where}: {status} {payload}, want 403")
                continue
            message = payload.get("error", "") if isinstance(payload, dict) else ""
            if set(payload) != {"error"} or listed_in(message) != allowers(verb, resource.title):
                failures.append(f"{where}: 403 message {message!r} should list exactly "
                                f"{sorted(allowers(verb, resource.title))}")
    assert not failures, "\n".join(failures)


async def test_denied_writes_change_nothing(api, project):
    """A Viewer's refused writes leave the rows as they were (the refusal comes before any work)."""
    viewer = await api.key(project.project_id, role=Role.VIEWER)
    select = {"name": True, "description": True, "updatedAt": True}
    before = await api.post(f"/api/incoming-call-policy/{project['policy']}/get-item", project.key, {"select": select})
    count = (await api.post("/api/incoming-call-policy/count", project.key, {}))["count"]
    await api.call("PUT", f"/api/incoming-call-policy/{project['policy']}", viewer, {"data": {"name": "X"}}, expect=403)
    await api.call("POST", f"/api/incoming-call-policy/{project['policy']}/update-item", viewer,
                   {"data": {"name": "X"}}, expect=403)
    await api.call("GET", f"/api/incoming-call-policy/{project['policy']}/delete-item", viewer, expect=403)
    await api.call("POST", "/api/incoming-call-policy", viewer, {"data": {"name": "X"}}, expect=403)
    after = await api.post(f"/api/incoming-call-policy/{project['policy']}/get-item", project.key, {"select": select})
    assert after == before
    assert (await api.post("/api/incoming-call-policy/count", project.key, {}))["count"] == count


@pytest.mark.parametrize("path", [r.path for r in RESOURCES])
async def test_expired_key_is_401(api, project, path):
    expired = await api.key(project.project_id, role=Role.OWNER,
                            expires=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1))
    for method, url, body in (("POST", f"/api/{path}/get-list", {}), ("POST", f"/api/{path}/count", {}),
                              ("POST", f"/api/{path}/{project.ids[path][0]}/get-item", {}),
                              ("POST", f"/api/{path}", {"data": {}}),
                              ("DELETE", f"/api/{path}/{project.ids[path][0]}", None)):
        status, payload = await api.call(method, url, expired, body, expect=None)
        assert status == 401, f"{method} {url}: {status} {payload}"
        assert "expired" in payload["error"]
    # A key that expires later works.
    later = await api.key(project.project_id, role=Role.VIEWER,
                          expires=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=1))
    await api.post(f"/api/{path}/count", later, {})


@pytest.mark.parametrize("key", [None, "", "hl_not-a-key", "x" * 500, "clé-non-ascii"])
async def test_missing_or_invalid_key_is_401(api, project, key):
    headers = {"ApiKey": key} if key is not None else {}
    for path in ("incoming-call-policy", "call-log"):
        resp = await api.client.post(f"/api/{path}/get-list", json={}, headers=headers)
        assert resp.status == 401, await resp.text()
        assert set(await resp.json()) == {"error"}


async def test_no_role_no_permission_is_403_everywhere(api, project):
    key = await api.key(project.project_id)
    for resource in RESOURCES:
        for op, verb in OPS.items():
            status, payload = await attempt(api, project, key, resource.path, op, False)
            expected = 405 if verb != "read" and not resource.writable else 403
            assert status == expected, f"{resource.path} {op}: {status} {payload}"


# -- relations: a related object is read with the permission to read it ------------------------------


async def test_log_reader_cannot_read_users_through_a_log(api, project):
    """The demonstrated bypass: "Read Incoming Call Log" alone read users' names and emails."""
    log_reader = await api.key(project.project_id, permissions=("Read Incoming Call Log",))
    select = {"answeredByUser": {"name": True, "email": True}}
    for url in ("/api/incoming-call-log/get-list", f"/api/incoming-call-log/{project['log']}/get-item"):
        status, payload = await api.call("POST", url, log_reader, {"select": select}, expect=None)
        assert status == 403, f"{url}: {status} {payload}"
        assert set(payload) == {"error"} and "Alice" not in payload["error"]
        assert "select.answeredByUser" in payload["error"]
        assert listed_in(payload["error"]) == allowers("read", "User")
    user_reader = await api.key(project.project_id, permissions=("Read Incoming Call Log", "Read User"))
    item = await api.post(f"/api/incoming-call-log/{project['log']}/get-item", user_reader, {"select": select})
    assert item["answeredByUser"]["name"] == "Alice"


RELATIONS = [pytest.param(r, name, id=f"{r.path}.{name}") for r in RESOURCES for name in r.schema.relations]


@pytest.mark.parametrize(("resource", "relation"), RELATIONS)
async def test_selecting_a_relation_needs_read_on_its_target(api, project, resource, relation):
    """Every relation (to one or to many), in get-list and get-item, whole or by sub-fields."""
    target = SCHEMA_TITLES[resource.schema.relations[relation].target]
    only_resource = await api.key(project.project_id, permissions=(f"Read {resource.title}",))
    urls = (f"/api/{resource.path}/get-list", f"/api/{resource.path}/{project.ids[resource.path][0]}/get-item")
    if target == resource.title:  # a menu's parent: reading the resource is reading its target
        for url in urls:
            await api.post(url, only_resource, {"select": {relation: True}})
            await api.post(url, only_resource, {"select": {relation: {"name": True}}})
        return
    with_target = await api.key(project.project_id, permissions=(f"Read {resource.title}", f"Read {target}"))
    for url in urls:
        for select in ({relation: True}, {relation: {"_id": True}}, {"_id": True, relation: {"createdAt": True}}):
            status, payload = await api.call("POST", url, only_resource, {"select": select}, expect=None)
            assert status == 403, f"{url} {select}: {status} {payload}"
            assert set(payload) == {"error"} and f"select.{relation}" in payload["error"]
            assert listed_in(payload["error"]) == allowers("read", target)
            await api.post(url, with_target, {"select": select})
        # Not selecting it, or selecting it false, needs nothing more.
        await api.post(url, only_resource, {"select": {"_id": True, relation: False}})


# -- isVerified on creation: Owner and Admin only ----------------------------------------------------


@pytest.mark.parametrize(("role", "permissions", "expected"), [
    pytest.param(Role.OWNER, (), 200, id="owner"),
    pytest.param(Role.ADMIN, (), 200, id="admin"),
    pytest.param(Role.MEMBER, (), 403, id="member"),
    pytest.param(Role.VIEWER, (), 403, id="viewer"),
    pytest.param(None, ("Create User Incoming Call Number",), 403, id="Create User Incoming Call Number"),
])
async def test_create_verified_number(api, project, role, permissions, expected):
    key = await api.key(project.project_id, role=role, permissions=permissions)
    data = {"userId": project["user"], "phoneNumber": unique_phone(), "isVerified": True}
    before = (await api.post("/api/user-incoming-call-number/count", project.key, {}))["count"]
    status, payload = await api.call("POST", "/api/user-incoming-call-number", key, {"data": data}, expect=None)
    assert status == expected, payload
    if expected == 200:
        row = await api.post(f"/api/user-incoming-call-number/{payload['_id']}/get-item", project.key,
                             {"select": {"isVerified": True}})
        assert row["isVerified"] is True
        return
    assert set(payload) == {"error"}
    if role in (Role.MEMBER, None):  # allowed to create numbers, not verified ones: the message says who may
        assert "Owner" in payload["error"] and "Admin" in payload["error"]
    assert (await api.post("/api/user-incoming-call-number/count", project.key, {}))["count"] == before


@pytest.mark.parametrize("role", [Role.MEMBER, None])
async def test_unverified_number_creation_allowed_without_admin(api, project, role):
    permissions = () if role else ("Create User Incoming Call Number",)
    key = await api.key(project.project_id, role=role, permissions=permissions)
    for extra in ({}, {"isVerified": False}):
        created = await api.create("user-incoming-call-number", key,
                                   {"userId": project["user"], "phoneNumber": unique_phone(), **extra})
        row = await api.post(f"/api/user-incoming-call-number/{created['_id']}/get-item", project.key,
                             {"select": {"isVerified": True}})
        assert row["isVerified"] is False


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
async def test_is_verified_cannot_be_set_by_update(api, project, role):
    key = await api.key(project.project_id, role=role)
    number = await api.create("user-incoming-call-number", project.key,
                              {"userId": project["user"], "phoneNumber": unique_phone()})
    status, payload = await api.call("PUT", f"/api/user-incoming-call-number/{number['_id']}", key,
                                     {"data": {"isVerified": True}}, expect=None)
    assert status == 400 and "isVerified" in payload["error"]
    row = await api.post(f"/api/user-incoming-call-number/{number['_id']}/get-item", project.key,
                         {"select": {"isVerified": True}})
    assert row["isVerified"] is False


# -- the rate limit: a token bucket per key ----------------------------------------------------------


async def test_rate_limit_is_per_key(database_url, tmp_path, aiohttp_client):
    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "5"})
    db = open_database(database_url, pool_size=2)
    client = await aiohttp_client(create_app(config, db=db))
    try:
        api = ApiClient(client, db)
        tenant = await api.tenant("Limited", roles=("owner", "viewer"))
        first, second = tenant.owner, tenant.keys["viewer"]
        for i in range(5):
            await api.post("/api/label/count", first, {})
        resp = await client.post("/api/label/count", json={}, headers={"ApiKey": first})
        assert resp.status == 429, await resp.text()
        retry_after = resp.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 12, retry_after
        body = await resp.json()
        assert set(body) == {"error"} and "Rate limit" in body["error"]
        # Every route of the key is limited, writes included; the refused write did nothing.
        resp = await client.post("/api/label", json={"data": {"name": "flood"}}, headers={"ApiKey": first})
        assert resp.status == 429
        # Another key of the same project has a bucket of its own.
        for i in range(5):
            await api.post("/api/label/get-list", second, {})
        status, _ = await api.call("POST", "/api/label/count", second, {}, expect=None)
        assert status == 429
        status, _ = await api.call("POST", "/api/label/count", first, {}, expect=None)
        assert status == 429
    finally:
        await client.close()
        await db.close_pool()
    # Nothing was created by the refused request (read through an unlimited app).
    config = load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "0"})
    db = open_database(database_url, pool_size=2)
    client = await aiohttp_client(create_app(config, db=db))
    try:
        counted = await ApiClient(client, db).post("/api/label/count", tenant.owner, {})
        assert counted == {"count": 0}
    finally:
        await client.close()
        await db.close_pool()


def test_matrix_covers_every_resource():
    assert {r.path for r in RESOURCES} == set(BY_PATH) and len(RESOURCES) == 20
    assert set(LOGS) == {r.path for r in RESOURCES if not r.writable}
    assert set(UPDATES) == set(BY_PATH)
