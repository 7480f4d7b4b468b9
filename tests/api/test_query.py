"""The query language: each operator, relation selects, sort, and paging bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from ivr.store.models import IncomingCallLog, Label


@pytest.fixture
async def logs(api, acme):
    """Five logs with known values, created a second apart."""
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    base = dt.datetime(2026, 1, 1, 12, 0, 0)
    rows = [
        ("Completed", "+14155550101", 30, "Answered by Alice"),
        ("Completed", "+14155550102", 60, "answered by bob"),
        ("NoAnswer", "+442071838750", None, "No one answered 100% of rules"),
        ("Busy", "+14155550104", 0, None),
        ("CallerHungUp", None, 5, "caller_left"),
    ]
    created = []
    for i, (status, caller, duration, message) in enumerate(rows):
        created.append(await IncomingCallLog.acreate(
            project=acme.project_id, incomingCallPolicyId=policy["_id"], status=status, callerPhoneNumber=caller,
            callDurationInSeconds=duration, statusMessage=message, startedAt=base + dt.timedelta(seconds=i),
            createdAt=base + dt.timedelta(seconds=i)))
    return created


async def ids_for(api, acme, query, sort=None) -> list[str]:
    body = {"query": query, "select": {"_id": True}}
    if sort:
        body["sort"] = sort
    listed = await api.post("/api/incoming-call-log/get-list", acme.owner, body, params={"limit": "100"})
    counted = await api.post("/api/incoming-call-log/count", acme.owner, {"query": query})
    assert counted["count"] == listed["count"] == len(listed["data"])
    return [row["_id"] for row in listed["data"]]


def pick(logs, *indexes) -> set[str]:
    return {str(logs[i].id) for i in indexes}


@pytest.mark.parametrize("query,expected", [
    ({"status": "Completed"}, (0, 1)),
    ({"status": ["Busy", "NoAnswer"]}, (2, 3)),
    ({"callerPhoneNumber": None}, (4,)),
    ({"callerPhoneNumber": [None, "+14155550101"]}, (0, 4)),
    ({"callDurationInSeconds": {"_type": "Includes", "value": [None, 0]}}, (2, 3)),
    ({"status": {"_type": "EqualTo", "value": "Busy"}}, (3,)),
    ({"status": {"_type": "NotEqual", "value": "Completed"}}, (2, 3, 4)),
    ({"callDurationInSeconds": {"_type": "NotEqual", "value": 30}}, (1, 2, 3, 4)),  # null is "not 30"
    ({"statusMessage": {"_type": "Search", "value": "ANSWERED BY"}}, (0, 1)),
    ({"statusMessage": {"_type": "Search", "value": "100%"}}, (2,)),       # % is literal
    ({"statusMessage": {"_type": "Search", "value": "_"}}, (4,)),          # so is _
    ({"statusMessage": {"_type": "StartsWith", "value": "answered"}}, (0, 1)),
    ({"statusMessage": {"_type": "EndsWith", "value": "RULES"}}, (2,)),
    ({"callDurationInSeconds": {"_type": "GreaterThan", "value": 30}}, (1,)),
    ({"callDurationInSeconds": {"_type": "GreaterThanOrEqual", "value": 30}}, (0, 1)),
    ({"callDurationInSeconds": {"_type": "LessThan", "value": 5}}, (3,)),
    ({"callDurationInSeconds": {"_type": "LessThanOrEqual", "value": 5}}, (3, 4)),
    ({"callDurationInSeconds": {"_type": "InBetween", "startValue": 5, "endValue": 30}}, (0, 4)),
    ({"startedAt": {"_type": "InBetween", "startValue": "2026-01-01T12:00:01Z",
                    "endValue": "2026-01-01T12:00:02.000Z"}}, (1, 2)),
    ({"startedAt": {"_type": "GreaterThan", "value": "2026-01-01T13:00:03+01:00"}}, (4,)),
    ({"status": {"_type": "Includes", "value": ["Busy", "CallerHungUp"]}}, (3, 4)),
    ({"callDurationInSeconds": {"_type": "IsNull"}}, (2,)),
    ({"callerPhoneNumber": {"_type": "NotNull"}}, (0, 1, 2, 3)),
    ({"callerPhoneNumber": "(415) 555-0101"}, (0,)),                       # phone values are normalized
    ({"callerPhoneNumber": "+44 20 7183 8750"}, (2,)),
    ({"status": "Completed", "callDurationInSeconds": {"_type": "GreaterThan", "value": 40}}, (1,)),
])
async def test_operators(api, acme, logs, query, expected):
    assert set(await ids_for(api, acme, query)) == pick(logs, *expected)


async def test_id_fields_filter_by_id(api, acme, logs):
    assert set(await ids_for(api, acme, {"_id": str(logs[2].id)})) == pick(logs, 2)
    assert set(await ids_for(api, acme, {"_id": [str(logs[0].id), str(logs[3].id)]})) == pick(logs, 0, 3)


@pytest.mark.parametrize("sort,expected", [
    (None, [4, 3, 2, 1, 0]),                                  # default: createdAt descending
    ({"createdAt": 1}, [0, 1, 2, 3, 4]),
    ({"createdAt": "DESC"}, [4, 3, 2, 1, 0]),
    ({"callDurationInSeconds": "ASC", "createdAt": -1}, None),  # checked below
    ({"status": 1, "createdAt": 1}, [3, 4, 0, 1, 2]),
])
async def test_sort(api, acme, logs, sort, expected):
    got = await ids_for(api, acme, {}, sort)
    if expected is not None:
        assert got == [str(logs[i].id) for i in expected]
    else:
        durations = {str(log.id): log.callDurationInSeconds for log in logs}
        non_null = [durations[i] for i in got if durations[i] is not None]
        assert non_null == sorted(non_null)


async def test_paging(api, acme, logs):
    page = await api.post("/api/incoming-call-log/get-list", acme.owner, {"sort": {"createdAt": 1}},
                          params={"skip": "1", "limit": "2"})
    assert page["count"] == 5 and page["skip"] == 1 and page["limit"] == 2
    assert [row["_id"] for row in page["data"]] == [str(logs[1].id), str(logs[2].id)]
    default = await api.post("/api/incoming-call-log/get-list", acme.owner, {})
    assert default["limit"] == 10 and default["skip"] == 0 and len(default["data"]) == 5
    assert all(set(row) == {"_id"} for row in default["data"])  # no select: ids only
    past_end = await api.post("/api/incoming-call-log/get-list", acme.owner, params={"skip": "50"})
    assert past_end["count"] == 5 and past_end["data"] == []
    hundred = await api.post("/api/incoming-call-log/get-list", acme.owner, params={"limit": "100"})
    assert hundred["limit"] == 100


@pytest.mark.parametrize("params,message", [
    ({"limit": "101"}, "limit must be at most 100"),
    ({"limit": "-1"}, "limit must be 0 or more"),
    ({"limit": "ten"}, "limit must be a whole number"),
    ({"skip": "-5"}, "skip must be 0 or more"),
    ({"skip": "1.5"}, "skip must be a whole number"),
])
async def test_paging_bounds(api, acme, params, message):
    status, body = await api.call("POST", "/api/incoming-call-log/get-list", acme.owner, {}, params=params,
                                  expect=None)
    assert status == 400 and message in body["error"]


async def test_relation_select(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    alice = await api.create("user", acme.owner, {"name": "Alice", "email": "alice@example.com",
                                                  "timeZone": "Europe/Paris"})
    rule = await api.create("incoming-call-policy-escalation-rule", acme.owner,
                            {"incomingCallPolicyId": policy["_id"], "userId": alice["_id"], "name": "First"})
    item = await api.post(f"/api/incoming-call-policy-escalation-rule/{rule['_id']}/get-item", acme.owner, {
        "select": {"name": True, "user": {"name": True, "email": True},
                   "incomingCallPolicy": {"name": True, "slug": True}, "team": True}})
    slug = item["incomingCallPolicy"].pop("slug")
    assert slug == "ops" or slug.startswith("ops-")  # slugs are unique across every project
    assert item == {
        "_id": rule["_id"], "name": "First",
        "user": {"_id": alice["_id"], "name": "Alice", "email": "alice@example.com"},
        "incomingCallPolicy": {"_id": policy["_id"], "name": "Ops"},
        "team": None,
    }
    # `true` gives the related object's fields.
    whole = await api.post(f"/api/incoming-call-policy-escalation-rule/{rule['_id']}/get-item", acme.owner,
                           {"select": {"user": True}})
    assert whole["user"]["timeZone"] == "Europe/Paris" and whole["user"]["_id"] == alice["_id"]
    assert "userId" not in whole  # only what was selected


async def test_many_relation_select(api, acme):
    red = await Label.acreate(project=acme.project_id, name="red", color="#f00")
    blue = await Label.acreate(project=acme.project_id, name="blue")
    policy = await api.create("incoming-call-policy", acme.owner,
                              {"name": "Ops", "labels": [str(red.id), {"_id": str(blue.id)}]})
    plain = await api.create("incoming-call-policy", acme.owner, {"name": "Plain"})
    listed = await api.post("/api/incoming-call-policy/get-list", acme.owner,
                            {"select": {"name": True, "labels": {"name": True}}, "sort": {"name": 1}})
    by_name = {row["name"]: row for row in listed["data"]}
    assert sorted(label["name"] for label in by_name["Ops"]["labels"]) == ["blue", "red"]
    assert by_name["Plain"]["labels"] == []
    await api.call("PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner, {"data": {"labels": []}})
    item = await api.post(f"/api/incoming-call-policy/{policy['_id']}/get-item", acme.owner,
                          {"select": {"labels": True}})
    assert item["labels"] == []
    assert plain["_id"]


@pytest.mark.parametrize("body,message", [
    ({"query": {"nope": 1}}, "query: unknown field 'nope'"),
    ({"query": {"status": {"_type": "Sideways", "value": 1}}}, "unknown operator 'Sideways'"),
    ({"query": {"status": {"value": 1}}}, "needs a _type"),
    ({"query": {"callDurationInSeconds": "long"}}, "must be a number"),
    ({"query": {"startedAt": {"_type": "GreaterThan", "value": "yesterday"}}}, "not an ISO 8601"),
    ({"query": {"_id": "not-a-uuid"}}, "not a valid ID"),
    ({"query": {"callDurationInSeconds": {"_type": "Search", "value": "3"}}}, "text fields only"),
    ({"query": {"callDurationInSeconds": {"_type": "InBetween", "startValue": 1}}}, "startValue and endValue"),
    ({"query": {"status": {"_type": "Includes", "value": "Busy"}}}, "needs a list"),
    ({"query": {"status": {"_type": "EqualTo"}}}, "needs a value"),
    ({"query": []}, "query must be an object"),
    ({"select": {"nope": True}}, "select: unknown field 'nope'"),
    ({"select": {"status": "yes"}}, "must be true or false"),
    ({"select": {"answeredByUser": {"nope": True}}}, "unknown field 'nope'"),
    ({"select": {"answeredByUser": {"name": {"x": True}}}}, "one level deep"),
    ({"sort": {"nope": 1}}, "sort: unknown field 'nope'"),
    ({"sort": {"status": "up"}}, "must be 1, -1"),
])
async def test_bad_queries_are_400(api, acme, body, message):
    status, answer = await api.call("POST", "/api/incoming-call-log/get-list", acme.owner, body, expect=None)
    assert status == 400, answer
    assert message in answer["error"]


# -- the cost of one query is bounded: it compares with short texts only --------------------------

@pytest.mark.parametrize("condition", [
    {"_type": "Search", "value": "{text}"},
    {"_type": "StartsWith", "value": "{text}"},
    {"_type": "EndsWith", "value": "{text}"},
    {"_type": "EqualTo", "value": "{text}"},
    {"_type": "NotEqual", "value": "{text}"},
    {"_type": "GreaterThan", "value": "{text}"},
    {"_type": "InBetween", "startValue": "a", "endValue": "{text}"},
    {"_type": "Includes", "value": ["a", "{text}"]},
    ["a", "{text}"],
    "{text}",
], ids=lambda c: c["_type"] if isinstance(c, dict) else type(c).__name__)
async def test_query_texts_are_at_most_200_characters(api, acme, logs, condition):
    def with_text(value, text):
        if isinstance(value, dict):
            return {k: with_text(v, text) for k, v in value.items()}
        if isinstance(value, list):
            return [with_text(v, text) for v in value]
        return text if value == "{text}" else value

    too_long = {"query": {"statusMessage": with_text(condition, "a" * 201)}}
    for path in ("/api/incoming-call-log/get-list", "/api/incoming-call-log/count"):
        status, answer = await api.call("POST", path, acme.owner, too_long, expect=None)
        assert status == 400, answer
        assert "query.statusMessage" in answer["error"] and "at most 200 characters" in answer["error"]
    await api.post("/api/incoming-call-log/get-list", acme.owner,
                   {"query": {"statusMessage": with_text(condition, "a" * 200)}})


async def test_a_query_may_compare_with_any_value_a_short_column_holds(api, acme):
    """sipUri holds 255 characters: the longest one can still be found."""
    user = await api.create("user", acme.owner, {"name": "Long URI"})
    uri = "sip:" + "a" * 240 + "@10.0.0.5"
    assert 200 < len(uri) <= 255
    number = await api.create("user-incoming-call-number", acme.owner, {"userId": user["_id"], "sipUri": uri})
    for condition in (uri, {"_type": "EqualTo", "value": uri}, {"_type": "StartsWith", "value": uri}):
        listed = await api.post("/api/user-incoming-call-number/get-list", acme.owner,
                                {"query": {"sipUri": condition}})
        assert [row["_id"] for row in listed["data"]] == [number["_id"]]
    status, answer = await api.call("POST", "/api/user-incoming-call-number/get-list", acme.owner,
                                    {"query": {"sipUri": {"_type": "Search", "value": "a" * 256}}}, expect=None)
    assert status == 400 and "at most 255 characters" in answer["error"], answer


async def test_same_shape_other_values_get_their_own_rows(api, acme, logs):
    """get-list and count compile one SQL per query shape: each request still binds its own values."""
    select = {"status": True, "callDurationInSeconds": True}
    seen = {}
    for status in ("Completed", "Busy", "NoAnswer", "Failed"):
        page = await api.post("/api/incoming-call-log/get-list", acme.owner,
                              {"select": select, "query": {"status": status}})
        count = await api.post("/api/incoming-call-log/count", acme.owner, {"query": {"status": status}})
        assert page["count"] == count["count"] == len(page["data"])
        assert {row["status"] for row in page["data"]} <= {status}
        seen[status] = sorted(row["callDurationInSeconds"] or 0 for row in page["data"])
    assert seen == {"Completed": [30, 60], "Busy": [0], "NoAnswer": [0], "Failed": []}
    # Another project's key with the same shape sees its own (none of Acme's).
    other = await api.tenant("Other")
    page = await api.post("/api/incoming-call-log/get-list", other.owner, {"select": select,
                                                                          "query": {"status": "Completed"}})
    assert page == {"count": 0, "limit": 10, "skip": 0, "data": []}
