"""Each error status, in the shape {"error": message}."""

from __future__ import annotations

import datetime as dt
import uuid

from api.app import create_app
from ivr.store.models import Role


async def raw(api, method, path, key=None, data: bytes | None = None):
    headers = {"ApiKey": key} if key else {}
    resp = await api.client.request(method, path, data=data, headers=headers)
    return resp.status, await resp.json(content_type=None), resp.headers


async def test_400_bad_json(api, acme):
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy/get-list", acme.owner, b"{not json")
    assert status == 400 and body["error"].startswith("The request body is not valid JSON")


async def test_400_body_not_an_object(api, acme):
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy", acme.owner, b"[1, 2]")
    assert (status, body) == (400, {"error": "The request body must be a JSON object"})


async def test_400_create_without_data(api, acme):
    status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner, {"name": "x"}, expect=None)
    assert status == 400 and "needs a data object" in body["error"]


async def test_400_unknown_and_read_only_fields(api, acme):
    status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                  {"data": {"name": "x", "colour": "red"}}, expect=None)
    assert status == 400 and "data: unknown field 'colour'" in body["error"]
    status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                  {"data": {"name": "x", "slug": "mine"}}, expect=None)
    assert (status, body) == (400, {"error": "data.slug: is read-only"})
    status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                  {"data": {"name": "x", "createdAt": "2020-01-01T00:00:00Z"}}, expect=None)
    assert (status, body) == (400, {"error": "data.createdAt: is read-only"})


async def test_400_wrong_types(api, acme):
    cases = [
        ({"name": 12}, "data.name: must be a string"),
        ({"name": "x", "isEnabled": "yes"}, "data.isEnabled: must be true or false"),
        ({"name": "x", "repeatPolicyIfNoOneAnswersTimes": "3"}, "data.repeatPolicyIfNoOneAnswersTimes: must be a number"),
        ({"name": "x", "repeatPolicyIfNoOneAnswersTimes": 2.5}, "must be a whole number"),
        ({"name": "x", "repeatPolicyIfNoOneAnswersTimes": 10**12}, "out of range"),
        ({"name": "x", "phoneNumberPurchasedAt": "last week"}, "not an ISO 8601 date-time"),
        ({"name": "x", "phoneNumberPurchasedAt": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ({"name": "x" * 300}, "at most 200 characters"),
        ({"name": "nul\x00byte"}, "must not contain NUL"),
        ({"name": None}, "data.name: must not be null"),
        ({}, "missing required field name"),
    ]
    for data, message in cases:
        status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner, {"data": data}, expect=None)
        assert status == 400 and message in body["error"], (data, body)


async def test_401(api, acme):
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy/get-list")
    assert (status, body) == (401, {"error": "Missing API key: send it in the ApiKey header."})
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy/get-list", "hl_not-a-real-key")
    assert (status, body) == (401, {"error": "Invalid API key."})
    expired = await api.key(acme.project_id, role=Role.OWNER,
                            expires=dt.datetime.utcnow() - dt.timedelta(minutes=1))
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy/get-list", expired)
    assert status == 401 and body["error"].startswith("This API key expired at")
    future = await api.key(acme.project_id, role=Role.OWNER, expires=dt.datetime.utcnow() + dt.timedelta(days=1))
    status, _, _ = await raw(api, "POST", "/api/incoming-call-policy/get-list", future)
    assert status == 200


async def test_403_names_what_would_allow_it(api, acme):
    status, body = await api.call("POST", "/api/incoming-call-policy", acme.keys["viewer"],
                                  {"data": {"name": "x"}}, expect=None)
    assert (status, body) == (403, {"error": (
        "Permission denied: to create Incoming Call Policy this API key needs one of: "
        "Project Owner, Project Admin, Project Member, Create Incoming Call Policy")})


async def test_404(api, acme):
    missing = str(uuid.uuid4())
    status, body = await api.call("POST", f"/api/incoming-call-policy/{missing}/get-item", acme.owner, {},
                                  expect=None)
    assert (status, body) == (404, {"error": f"No Incoming Call Policy with id {missing}."})
    status, body = await api.call("PUT", "/api/incoming-call-policy/not-an-id", acme.owner, {"data": {}},
                                  expect=None)
    assert status == 404
    status, body, _ = await raw(api, "GET", "/api/no-such-resource/get-list", acme.owner)
    assert (status, body) == (404, {"error": "No route GET /api/no-such-resource/get-list"})


async def test_405_unknown_method(api, acme):
    status, body, headers = await raw(api, "PATCH", "/api/incoming-call-policy", acme.owner)
    assert status == 405 and "PATCH is not allowed" in body["error"]
    assert "POST" in headers.get("Allow", "")


async def test_409_duplicate_routing_number(api, acme, config):
    await api.create("incoming-call-policy", acme.owner, {"name": "One", "routingPhoneNumber": "+1 (415) 555-0142"})
    other = await api.tenant("Other")
    status, body = await api.call("POST", "/api/incoming-call-policy", other.owner,
                                  {"data": {"name": "Two", "routingPhoneNumber": "4155550142"}}, expect=None)
    assert status == 409
    assert body == {"error": "The routing phone number +14155550142 is already used by an Incoming Call Policy of "
                             "another project: a number routes to one Call Menu or Incoming Call Policy."}


async def test_429_rate_limit_per_key(api, acme, config, aiohttp_client):
    limited = create_app(config.replace(api__rate_limit=3), db=api.db)
    client = await aiohttp_client(limited)
    other = await api.key(acme.project_id, role=Role.OWNER)
    for _ in range(3):
        resp = await client.post("/api/label/count", headers={"ApiKey": acme.owner})
        assert resp.status == 200
    resp = await client.post("/api/label/count", headers={"ApiKey": acme.owner})
    body = await resp.json()
    assert resp.status == 429 and body["error"].startswith("Rate limit exceeded: 3 requests per minute")
    assert int(resp.headers["Retry-After"]) >= 1
    resp = await client.post("/api/label/count", headers={"ApiKey": other})
    assert resp.status == 200  # another key has its own bucket


async def test_openapi_document_is_served(api):
    resp = await api.client.get("/api/openapi.json")
    document = await resp.json()
    assert resp.status == 200 and document["openapi"].startswith("3.")
    assert "/api/incoming-call-policy/get-list" in document["paths"]
    assert "/api/incoming-call-log" not in document["paths"]  # logs cannot be created
    schema = document["components"]["schemas"]["IncomingCallPolicy"]
    assert schema["properties"]["routingPhoneNumber"]["description"] == \
        "The phone number for incoming calls to this policy"


async def test_400_long_texts_are_capped(api, acme):
    """Long text fields (descriptions, the messages a caller hears) hold at most 10,000 characters."""
    from api.registry import BY_PATH
    from api.schema import MAX_LONG_TEXT

    policy = BY_PATH["incoming-call-policy"]
    long_texts = [name for name, f in policy.schema.fields.items() if f.kind == "longtext" and not f.read_only]
    assert {"description", "greetingMessage", "noAnswerMessage", "noOneAvailableMessage"} <= set(long_texts)
    created = await api.create("incoming-call-policy", acme.owner, {"name": "Long", **{
        name: "y" * MAX_LONG_TEXT for name in long_texts}})
    for name in long_texts:
        data = {name: "y" * (MAX_LONG_TEXT + 1)}
        status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                      {"data": {"name": "x", **data}}, expect=None)
        assert (status, body) == (400, {"error": f"data.{name}: at most 10000 characters"})
        status, body = await api.call("PUT", f"/api/incoming-call-policy/{created['_id']}", acme.owner,
                                      {"data": data}, expect=None)
        assert (status, body) == (400, {"error": f"data.{name}: at most 10000 characters"})
    team = await api.create("team", acme.owner, {"name": "Long"})
    status, body = await api.call("PUT", f"/api/team/{team['_id']}", acme.owner,
                                  {"data": {"description": "z" * (MAX_LONG_TEXT + 1)}}, expect=None)
    assert (status, body) == (400, {"error": "data.description: at most 10000 characters"})
    # The OpenAPI document says so too.
    document = await api.call("GET", "/api/openapi.json")
    data = document["paths"]["/api/incoming-call-policy"]["post"]["requestBody"]["content"]["application/json"]
    assert data["schema"]["properties"]["data"]["properties"]["greetingMessage"]["maxLength"] == MAX_LONG_TEXT


async def test_400_deeply_nested_body(api, acme):
    """Deeper than json.loads can go (100,000 lists), or than the API ever needs: a 400, never a 500."""
    from api.app import MAX_DEPTH

    for depth in (100_000, 990, MAX_DEPTH + 1):
        nested = "[" * depth + "]" * depth
        for path, text in (("/api/incoming-call-policy/get-list", '{"query": {"name": %s}}' % nested),
                           ("/api/incoming-call-policy", '{"data": {"name": "x", "description": %s}}' % nested),
                           ("/api/incoming-call-policy", nested)):
            status, body, _ = await raw(api, "POST", path, acme.owner, text.encode())
            assert (status, body) == (400, {"error": f"The request body is nested too deeply: at most "
                                                     f"{MAX_DEPTH} levels of objects and lists"}), (depth, path)
    # As deep as allowed: an ordinary 400 for the wrong type.
    nested = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    status, body, _ = await raw(api, "POST", "/api/incoming-call-policy", acme.owner,
                                ('{"data": {"name": "x", "description": %s}}' % nested).encode())
    assert (status, body) == (400, {"error": "data.description: must be a string"})
