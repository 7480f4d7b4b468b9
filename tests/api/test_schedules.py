"""On-call schedules through the API: layers, their users, overrides, validation, ``.../on-call``, and
what an escalation rule targeting a schedule (or a team) rings at call time."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from ivr.store import callstore
from ivr.store import models as m

SCHEDULES = "/api/on-call-duty-policy-schedule"
LAYERS = "/api/on-call-duty-policy-schedule-layer"
LAYER_USERS = "/api/on-call-duty-policy-schedule-layer-user"
OVERRIDES = "/api/on-call-duty-policy-schedule-override"


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def error_of(api, method, path, key, body=None, params=None) -> tuple[int, str]:
    status, answer = await api.call(method, path, key, body, params=params, expect=None)
    assert set(answer) == {"error"}, answer
    return status, answer["error"]


async def make_users(api, key, *names) -> dict[str, str]:
    users = {}
    for name in names:
        user = await api.create("user", key, {"name": name.title(), "email": f"{name}-{tag()}@example.com"})
        users[name] = user["_id"]
    return users


async def make_layer(api, key, schedule_id, users, **data) -> str:
    layer = await api.create("on-call-duty-policy-schedule-layer", key,
                             {"onCallDutyPolicyScheduleId": schedule_id, **data})
    for user_id in users:
        await api.create("on-call-duty-policy-schedule-layer-user", key,
                         {"onCallDutyPolicyScheduleLayerId": layer["_id"], "userId": user_id})
    return layer["_id"]


async def on_call(api, key, schedule_id, at, next_count=None) -> dict:
    params = {"at": at}
    if next_count is not None:
        params["next"] = str(next_count)
    return await api.call("GET", f"{SCHEDULES}/{schedule_id}/on-call", key, params=params)


@pytest.fixture
async def business(api, acme):
    """A New York schedule: a weekly 24x7 rotation (alice, bob), office hours on weekdays (carol), and a
    one-day override (dave on Wednesday 2024-03-06)."""
    users = await make_users(api, acme.owner, "alice", "bob", "carol", "dave")
    schedule = await api.create("on-call-duty-policy-schedule", acme.owner,
                                {"name": f"Primary {tag()}", "timeZone": "America/New_York"})
    sid = schedule["_id"]
    always = await make_layer(api, acme.owner, sid, [users["alice"], users["bob"]], name="24x7",
                              startsAt="2024-03-04T14:00:00Z", rotationInterval="Week", handOffTime="09:00")
    office = await make_layer(api, acme.owner, sid, [users["carol"]], name="Office",
                              startsAt="2024-03-04T14:00:00Z", rotationInterval="Day",
                              restrictionTimes=[{"type": "Daily", "startTime": "9:00", "endTime": "17:00",
                                                 "days": ["mon", "Tue", "Wednesday", "Thursday", "Friday"]}])
    override = await api.create("on-call-duty-policy-schedule-override", acme.owner, {
        "onCallDutyPolicyScheduleId": sid, "userId": users["dave"], "startsAt": "2024-03-06T05:00:00Z",
        "endsAt": "2024-03-07T05:00:00Z", "description": "Sick day"})
    return sid, users, always, office, override["_id"]


async def test_who_is_on_call_through_the_api(api, acme, business):
    sid, users, always, office, override = business
    answer = await on_call(api, acme.owner, sid, "2024-03-05T15:00:00Z", next_count=3)  # Tuesday 10:00 EST
    assert answer["userId"] == users["carol"] and answer["onCallDutyPolicyScheduleLayerId"] == office
    assert answer["user"]["name"] == "Carol" and answer["onCallDutyPolicyScheduleOverrideId"] is None
    assert answer["at"] == "2024-03-05T15:00:00.000Z" and answer["timeZone"] == "America/New_York"
    assert answer["until"] == "2024-03-05T22:00:00.000Z"  # 17:00 EST
    assert [(h["at"], h["userId"]) for h in answer["handoffs"]] == [
        ("2024-03-05T22:00:00.000Z", users["alice"]),
        ("2024-03-06T05:00:00.000Z", users["dave"]),    # the override, at midnight EST
        ("2024-03-07T05:00:00.000Z", users["alice"])]
    assert answer["handoffs"][1]["onCallDutyPolicyScheduleOverrideId"] == override
    # After the change to summer time, the weekly hand-off is still at 09:00 local (13:00 UTC).
    answer = await on_call(api, acme.owner, sid, "2024-03-11T12:59:00Z")
    assert answer["userId"] == users["alice"] and answer["until"] == "2024-03-11T13:00:00.000Z"
    answer = await on_call(api, acme.keys["viewer"], sid, "2024-03-11T13:00:00")  # no offset: UTC
    assert answer["userId"] == users["carol"]  # Monday 09:00 EDT: the office opens as bob's week starts
    answer = await on_call(api, acme.owner, sid, "2024-03-09T15:00:00Z", next_count=1)  # Saturday
    assert answer["userId"] == users["alice"] and answer["handoffs"][0]["at"] == "2024-03-11T13:00:00.000Z"
    # Before any layer starts: no one, and the answer says when that changes.
    answer = await on_call(api, acme.owner, sid, "2024-03-01T00:00:00Z")
    assert answer["userId"] is None and answer["user"] is None and answer["until"] == "2024-03-04T14:00:00.000Z"
    now = await api.call("GET", f"{SCHEDULES}/{sid}/on-call", acme.owner)  # default: now
    assert now["userId"] in (users["alice"], users["bob"], users["carol"])


async def test_later_layers_win_and_moving_a_layer_changes_who(api, acme, business):
    sid, users, always, office, _ = business
    tuesday = "2024-03-05T15:00:00Z"
    assert (await on_call(api, acme.owner, sid, tuesday))["userId"] == users["carol"]
    await api.call("PUT", f"{LAYERS}/{office}", acme.owner, {"data": {"order": 1}})  # office under 24x7
    layers = await api.post(f"{LAYERS}/get-list", acme.owner, {
        "query": {"onCallDutyPolicyScheduleId": sid}, "select": {"name": True, "order": True}, "sort": {"order": 1}})
    assert [(row["name"], row["order"]) for row in layers["data"]] == [("Office", 1), ("24x7", 2)]
    assert (await on_call(api, acme.owner, sid, tuesday))["userId"] == users["alice"]
    await api.call("DELETE", f"{LAYERS}/{always}", acme.owner)
    assert (await on_call(api, acme.owner, sid, tuesday))["userId"] == users["carol"]
    assert (await on_call(api, acme.owner, sid, "2024-03-05T23:00:00Z"))["userId"] is None  # after office hours


async def test_layer_users_are_a_dense_rotation_order(api, acme, business):
    sid, users, always, _, _ = business
    extra = await api.create("on-call-duty-policy-schedule-layer-user", acme.owner, {
        "onCallDutyPolicyScheduleLayerId": always, "userId": users["dave"], "order": 1})

    async def rotation():
        rows = await api.post(f"{LAYER_USERS}/get-list", acme.owner, {
            "query": {"onCallDutyPolicyScheduleLayerId": always}, "select": {"userId": True, "order": True},
            "sort": {"order": "ASC"}})
        assert [row["order"] for row in rows["data"]] == list(range(1, len(rows["data"]) + 1))
        return [row["userId"] for row in rows["data"]]

    assert await rotation() == [users["dave"], users["alice"], users["bob"]]
    saturday = "2024-03-09T15:00:00Z"
    assert (await on_call(api, acme.owner, sid, saturday))["userId"] == users["dave"]
    await api.call("PUT", f"{LAYER_USERS}/{extra['_id']}", acme.owner, {"data": {"order": 3}})
    assert await rotation() == [users["alice"], users["bob"], users["dave"]]
    assert (await on_call(api, acme.owner, sid, saturday))["userId"] == users["alice"]
    # A user in a rotation cannot be deleted (like a user an escalation rule targets).
    status, message = await error_of(api, "DELETE", f"/api/user/{users['bob']}", acme.owner)
    assert status == 409 and "still used" in message


async def test_layer_validation(api, acme, business):
    sid = business[0]
    base = {"onCallDutyPolicyScheduleId": sid, "startsAt": "2024-01-01T00:00:00Z"}
    for data, message in [
        ({"handOffTime": "9am"}, "data.handOffTime: '9am' is not a time of day"),
        ({"rotationIntervalCount": 0}, "data.rotationIntervalCount: must be between 1 and 1000"),
        ({"rotationInterval": "Month"}, "data.rotationInterval: must be one of Hour, Day, Week"),
        ({"restrictionTimes": {"type": "Daily"}}, "data.restrictionTimes: must be a list"),
        ({"restrictionTimes": [{"type": "Daily", "startTime": "09:00", "endTime": "17:60"}]},
         "data.restrictionTimes[0].endTime: '17:60' is not a time of day"),
        ({"restrictionTimes": [{"type": "Weekly", "startDay": "Mon", "startTime": "09:00", "endDay": "Caturday",
                                "endTime": "17:00"}]}, "data.restrictionTimes[0].endDay: 'Caturday' is not a day"),
        ({"restrictionTimes": None}, "data.restrictionTimes: must not be null"),
        ({"startsAt": "9999-01-01T00:00:00Z"}, "data.startsAt: must be between 1970 and 2200"),
    ]:
        status, error = await error_of(api, "POST", LAYERS, acme.owner, {"data": {**base, **data}})
        assert status == 400 and error.startswith(message), (data, error)
    status, error = await error_of(api, "POST", LAYERS, acme.owner, {"data": {"onCallDutyPolicyScheduleId": sid}})
    assert (status, error) == (400, "data: missing required field startsAt")
    # Stored in canonical form.
    layer = await api.create("on-call-duty-policy-schedule-layer", acme.owner, {
        **base, "handOffTime": "7:05", "restrictionTimes": [
            {"type": "Weekly", "startDay": "fri", "startTime": "18:00", "endDay": "MONDAY", "endTime": "8:00"}]})
    row = await api.post(f"{LAYERS}/{layer['_id']}/get-item", acme.owner, {
        "select": {"handOffTime": True, "restrictionTimes": True, "rotationInterval": True,
                   "rotationIntervalCount": True, "order": True}})
    assert row == {"_id": layer["_id"], "handOffTime": "07:05", "rotationInterval": "Week",
                   "rotationIntervalCount": 1, "order": 3, "restrictionTimes": [
                       {"type": "Weekly", "startDay": "Friday", "startTime": "18:00", "endDay": "Monday",
                        "endTime": "08:00"}]}


async def test_schedule_and_override_validation(api, acme, business):
    sid, users, *_ = business
    status, error = await error_of(api, "POST", SCHEDULES, acme.owner, {"data": {"name": "X", "timeZone": "Nowhere"}})
    assert status == 400 and error.startswith("data.timeZone: 'Nowhere' is not an IANA time zone")
    name = (await api.post(f"{SCHEDULES}/{sid}/get-item", acme.owner, {"select": {"name": True}}))["name"]
    status, error = await error_of(api, "POST", SCHEDULES, acme.owner, {"data": {"name": name}})
    assert (status, error) == (409, f"An On-Call Duty Policy Schedule named {name!r} already exists in this project.")
    override = {"onCallDutyPolicyScheduleId": sid, "userId": users["bob"], "startsAt": "2024-03-06T05:00:00Z",
                "endsAt": "2024-03-06T05:00:00Z"}
    status, error = await error_of(api, "POST", OVERRIDES, acme.owner, {"data": override})
    assert (status, error) == (400, "data.endsAt: must be after startsAt")
    created = await api.create("on-call-duty-policy-schedule-override", acme.owner,
                               {**override, "endsAt": "2024-03-06T06:00:00Z"})
    status, error = await error_of(api, "PUT", f"{OVERRIDES}/{created['_id']}", acme.owner,
                                   {"data": {"startsAt": "2024-03-06T07:00:00Z"}})
    assert (status, error) == (400, "data.endsAt: must be after startsAt")


async def test_on_call_errors(api, acme, business):
    sid = business[0]
    url = f"{SCHEDULES}/{sid}/on-call"
    assert await error_of(api, "GET", url, acme.owner, params={"at": "soon"}) == \
        (400, "at: 'soon' is not an ISO 8601 date-time")
    for at in ("1969-12-31T23:59:59Z", "9999-12-31T23:59:59Z"):
        assert (await error_of(api, "GET", url, acme.owner, params={"at": at}))[1].startswith(
            "at: must be between 1970 and 2200")
    assert await error_of(api, "GET", url, acme.owner, params={"at": "0001-01-01T00:00:00+05:00"}) == \
        (400, "at: '0001-01-01T00:00:00+05:00' is out of range")
    assert (await error_of(api, "GET", url, acme.owner, params={"next": "101"}))[0] == 400
    assert (await error_of(api, "GET", url, acme.owner, params={"next": "two"}))[0] == 400
    missing = str(uuid.uuid4())
    assert await error_of(api, "GET", f"{SCHEDULES}/{missing}/on-call", acme.owner) == \
        (404, f"No On-Call Duty Policy Schedule with id {missing}.")
    other = await api.tenant("Other", roles=("owner",))
    assert (await error_of(api, "GET", url, other.owner))[0] == 404
    assert (await error_of(api, "GET", url, None))[0] == 401
    key = await api.key(acme.project_id, permissions=("Read Incoming Call Policy",))
    status, error = await error_of(api, "GET", url, key)
    assert status == 403 and "Read On-Call Duty Policy Schedule" in error and "Project Viewer" in error
    key = await api.key(acme.project_id, permissions=("Read On-Call Duty Policy Schedule",))
    await api.call("GET", url, key, params={"at": "2024-03-05T15:00:00Z"})


async def test_a_schedule_in_use_by_a_rule_cannot_be_deleted(api, acme, business):
    sid = business[0]
    policy = await api.create("incoming-call-policy", acme.owner, {"name": f"P {tag()}"})
    await api.create("incoming-call-policy-escalation-rule", acme.owner,
                     {"incomingCallPolicyId": policy["_id"], "onCallDutyPolicyScheduleId": sid})
    status, error = await error_of(api, "DELETE", f"{SCHEDULES}/{sid}", acme.owner)
    assert status == 409 and "still used" in error
    rule = await api.post("/api/incoming-call-policy-escalation-rule/get-list", acme.owner, {
        "query": {"incomingCallPolicyId": policy["_id"]}, "select": {"onCallDutyPolicySchedule": {"name": True}}})
    assert rule["data"][0]["onCallDutyPolicySchedule"]["_id"] == sid


# -- what an escalation rule rings at call time (callstore.resolve_rule) ------------------------------


async def add_number(api, key, user_id, verified=True) -> str:
    number = await api.create("user-incoming-call-number", key, {
        "userId": user_id, "sipUri": f"sip:{tag()}@10.0.0.7", "isVerified": verified})
    return number["_id"]


async def rule_row(api, key, **target) -> m.IncomingCallPolicyEscalationRule:
    policy = await api.create("incoming-call-policy", key, {"name": f"P {tag()}"})
    rule = await api.create("incoming-call-policy-escalation-rule", key,
                            {"incomingCallPolicyId": policy["_id"], **target})
    return await api.db.run(m.IncomingCallPolicyEscalationRule.get_by_id, uuid.UUID(rule["_id"]))


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def test_schedule_rule_rings_the_verified_numbers_of_whoever_is_on_call(api, acme, business):
    sid, users, *_ = business
    carol_numbers = [await add_number(api, acme.owner, users["carol"]) for _ in range(2)]
    await add_number(api, acme.owner, users["carol"], verified=False)     # never rung
    alice_number = await add_number(api, acme.owner, users["alice"])
    rule = await rule_row(api, acme.owner, onCallDutyPolicyScheduleId=sid)

    async def rung(at: str) -> list[tuple[str, str]]:
        contacts = await api.db.run(callstore.resolve_rule, rule, utc(at))
        return [(c.user_id, c.number_id) for c in contacts]

    assert await rung("2024-03-05T15:00:00") == [(users["carol"], n) for n in carol_numbers]
    assert await rung("2024-03-05T23:00:00") == [(users["alice"], alice_number)]
    assert await rung("2024-03-06T15:00:00") == []    # dave's override, and dave has no number
    assert await rung("2024-03-01T00:00:00") == []    # no one on call yet


async def test_team_rule_rings_all_members_at_once(api, acme):
    users = await make_users(api, acme.owner, "erin", "frank", "grace")
    team = await api.create("team", acme.owner, {"name": f"SRE {tag()}"})
    numbers = {}
    for name in ("erin", "frank", "grace"):
        await api.create("team-member", acme.owner, {"teamId": team["_id"], "userId": users[name]})
        numbers[name] = await add_number(api, acme.owner, users[name], verified=name != "grace")
    rule = await rule_row(api, acme.owner, teamId=team["_id"])
    contacts = await api.db.run(callstore.resolve_rule, rule, m.utcnow())
    assert [(c.user_id, c.number_id) for c in contacts] == [(users["erin"], numbers["erin"]),
                                                            (users["frank"], numbers["frank"])]
