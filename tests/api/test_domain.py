"""Domain rules: routing numbers, slugs, rule order and targets, numbers, users, teams, labels."""

from __future__ import annotations

import uuid

import pytest

RULES = "/api/incoming-call-policy-escalation-rule"


def unique_number() -> str:
    # A valid US number that no other test uses (555-01xx are fictional, 2xx area codes are real).
    n = uuid.uuid4().int
    return f"+1 (212) {200 + n % 800:03d}-{n // 1000 % 10000:04d}"


async def get(api, tenant, resource, item_id, *fields):
    return await api.post(f"/api/{resource}/{item_id}/get-item", tenant.owner,
                          {"select": {f: True for f in fields}})


async def error_of(api, method, path, key, body) -> tuple[int, str]:
    status, answer = await api.call(method, path, key, body, expect=None)
    return status, answer.get("error", "")


# -- policies -----------------------------------------------------------------------


async def test_routing_number_is_stored_in_e164_with_its_country_and_area(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner,
                              {"name": "UK desk", "routingPhoneNumber": "+44 20 7183 8750"})
    assert policy["routingPhoneNumber"] == "+442071838750"
    item = await get(api, acme, "incoming-call-policy", policy["_id"], "routingPhoneNumber",
                     "phoneNumberCountryCode", "phoneNumberAreaCode")
    assert item["phoneNumberCountryCode"] == "GB" and item["phoneNumberAreaCode"] == "20"


async def test_national_numbers_are_read_in_the_default_region(api, acme):
    number = unique_number()
    national = number.replace("+1 ", "")
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "US", "routingPhoneNumber": national})
    assert policy["routingPhoneNumber"] == "+1" + "".join(c for c in national if c.isdigit())


@pytest.mark.parametrize("number,reason", [
    ("12", "is not a valid phone number"),
    ("hello", "is not a phone number"),
    ("+1 415 555", "is not a valid phone number"),
    ("+999 1234567", "is not a phone number"),
])
async def test_bad_routing_numbers_are_400_saying_so(api, acme, number, reason):
    status, message = await error_of(api, "POST", "/api/incoming-call-policy", acme.owner,
                                     {"data": {"name": "x", "routingPhoneNumber": number}})
    assert status == 400 and message.startswith("data.routingPhoneNumber: ") and reason in message


async def test_routing_number_update_checks_duplicates(api, acme):
    first = unique_number()
    one = await api.create("incoming-call-policy", acme.owner, {"name": "One", "routingPhoneNumber": first})
    two = await api.create("incoming-call-policy", acme.owner, {"name": "Two"})
    status, message = await error_of(api, "PUT", f"/api/incoming-call-policy/{two['_id']}", acme.owner,
                                     {"data": {"routingPhoneNumber": first}})
    assert status == 409 and "already used" in message
    # Setting a policy's own number again is not a conflict.
    await api.call("PUT", f"/api/incoming-call-policy/{one['_id']}", acme.owner,
                   {"data": {"routingPhoneNumber": first}})


async def test_slugs_are_unique_across_projects_and_stable(api, acme):
    name = f"Night desk {uuid.uuid4().hex[:6]}"
    other = await api.tenant("Other")
    a = await api.create("incoming-call-policy", acme.owner, {"name": name})
    b = await api.create("incoming-call-policy", other.owner, {"name": name})
    slug_a = (await get(api, acme, "incoming-call-policy", a["_id"], "slug"))["slug"]
    slug_b = (await get(api, other, "incoming-call-policy", b["_id"], "slug"))["slug"]
    assert slug_a == name.lower().replace(" ", "-") and slug_b.startswith(slug_a + "-") and slug_a != slug_b
    await api.call("PUT", f"/api/incoming-call-policy/{a['_id']}", acme.owner, {"data": {"name": "Renamed"}})
    assert (await get(api, acme, "incoming-call-policy", a["_id"], "slug"))["slug"] == slug_a


async def test_policy_name_must_not_be_blank(api, acme):
    status, message = await error_of(api, "POST", "/api/incoming-call-policy", acme.owner, {"data": {"name": "  "}})
    assert (status, message) == (400, "data.name: must not be empty")


# -- escalation rules -------------------------------------------------------------------


# -- business hours and caller lists ------------------------------------------------------


async def test_new_policies_have_open_hours_empty_lists_and_default_messages(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Defaults"})
    item = await get(api, acme, "incoming-call-policy", policy["_id"], "businessHours", "businessHoursTimeZone",
                     "afterHoursMessage", "callerBlockList", "callerAllowList", "blockedCallerMessage")
    assert item == {"_id": policy["_id"], "businessHours": [], "businessHoursTimeZone": "UTC",
                    "afterHoursMessage": "We are closed. Please call again during business hours.",
                    "callerBlockList": [], "callerAllowList": [],
                    "blockedCallerMessage": "This number cannot take your call."}


async def test_hours_and_lists_round_trip_in_their_canonical_form(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {
        "name": "Office", "businessHoursTimeZone": "Europe/Paris", "afterHoursMessage": "Closed, sorry.",
        "businessHours": [{"type": "Daily", "startTime": "9:00", "endTime": "17:30", "days": ["mon", "Fri"]},
                          {"type": "Weekly", "startDay": "sat", "startTime": "10:00", "endDay": "Sat",
                           "endTime": "12:00"}],
        "callerBlockList": ["+1 (415) 555-0100", "+44 20*", "(212) 555-0199", "+14155550100"],
        "callerAllowList": ["+1*"]})
    fields = ("businessHours", "businessHoursTimeZone", "afterHoursMessage", "callerBlockList", "callerAllowList")
    item = await get(api, acme, "incoming-call-policy", policy["_id"], *fields)
    assert item["businessHours"] == [
        {"type": "Daily", "startTime": "09:00", "endTime": "17:30", "days": ["Monday", "Friday"]},
        {"type": "Weekly", "startDay": "Saturday", "startTime": "10:00", "endDay": "Saturday", "endTime": "12:00"}]
    assert item["callerBlockList"] == ["+14155550100", "+4420*", "+12125550199"]  # E.164, deduplicated
    assert (item["businessHoursTimeZone"], item["afterHoursMessage"], item["callerAllowList"]) == (
        "Europe/Paris", "Closed, sorry.", ["+1*"])
    await api.call("PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner,
                   {"data": {"businessHours": [], "callerBlockList": [], "callerAllowList": ["+33 1 42 68 53 00"]}})
    item = await get(api, acme, "incoming-call-policy", policy["_id"], *fields)
    assert (item["businessHours"], item["callerBlockList"], item["callerAllowList"]) == ([], [], ["+33142685300"])
    assert item["businessHoursTimeZone"] == "Europe/Paris"  # untouched


@pytest.mark.parametrize("data,message", [
    ({"businessHours": [{"type": "Daily", "startTime": "25:00", "endTime": "17:00"}]},
     "data.businessHours[0].startTime: '25:00' is not a time of day like 09:00"),
    ({"businessHours": [{"type": "Hourly"}]}, "data.businessHours[0].type: must be Daily or Weekly"),
    ({"businessHours": {"type": "Daily"}}, "data.businessHours: must be a list of windows"),
    ({"businessHours": [{"type": "Weekly", "startDay": "Funday", "startTime": "09:00", "endDay": "Monday",
                         "endTime": "10:00"}]}, "data.businessHours[0].startDay: 'Funday' is not a day of the week"),
    ({"businessHoursTimeZone": "Mars/Olympus"}, "data.businessHoursTimeZone: 'Mars/Olympus' is not an IANA time zone"),
    ({"businessHoursTimeZone": None}, "data.businessHoursTimeZone: must not be null"),
    ({"callerBlockList": ["+14155550100", "hello"]}, "data.callerBlockList[1]: 'hello' is not a phone number"),
    ({"callerAllowList": ["415*"]}, "data.callerAllowList[0]: '415*' is not a prefix pattern"),
    ({"callerAllowList": "+14155550100"}, "data.callerAllowList: must be a list"),
    ({"callerBlockList": [f"+1212555{n:04d}" for n in range(1001)]},
     "data.callerBlockList: at most 1000 entries (this list has 1001)"),
])
async def test_bad_hours_zones_and_list_entries_are_400_saying_so(api, acme, data, message):
    status, error = await error_of(api, "POST", "/api/incoming-call-policy", acme.owner, {"data": {"name": "x", **data}})
    assert status == 400 and error.startswith(message), error
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "y"})
    status, error = await error_of(api, "PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner, {"data": data})
    assert status == 400 and error.startswith(message), error


async def test_a_list_of_1000_entries_is_accepted(api, acme):
    entries = [f"+1212555{n:04d}" for n in range(1000)]
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Many", "callerAllowList": entries})
    item = await get(api, acme, "incoming-call-policy", policy["_id"], "callerAllowList")
    assert item["callerAllowList"] == entries


async def test_the_new_fields_are_in_the_openapi_document(api):
    document = await api.call("GET", "/api/openapi.json")
    schemas = document["components"]["schemas"]
    [policy] = [schema for title, schema in schemas.items() if title.replace(" ", "") == "IncomingCallPolicy"]
    for name in ("businessHours", "businessHoursTimeZone", "afterHoursMessage", "callerBlockList",
                 "callerAllowList", "blockedCallerMessage"):
        assert policy["properties"][name]["description"], name
    assert "+1415*" in policy["properties"]["callerBlockList"]["description"]


@pytest.fixture
async def policy_with_user(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    user = await api.create("user", acme.owner, {"name": "Alice"})
    return policy["_id"], user["_id"]


async def orders(api, tenant, policy_id) -> list[str]:
    listed = await api.post(f"{RULES}/get-list", tenant.owner, {
        "query": {"incomingCallPolicyId": policy_id}, "select": {"name": True, "order": True},
        "sort": {"order": 1}})
    assert [row["order"] for row in listed["data"]] == list(range(1, listed["count"] + 1))  # always dense
    return [row["name"] for row in listed["data"]]


async def add_rule(api, tenant, policy_id, user_id, name, **extra):
    data = {"incomingCallPolicyId": policy_id, "userId": user_id, "name": name, **extra}
    return await api.create("incoming-call-policy-escalation-rule", tenant.owner, data)


async def test_rule_order_missing_means_last_and_insert_shifts(api, acme, policy_with_user):
    policy_id, user_id = policy_with_user
    a = await add_rule(api, acme, policy_id, user_id, "a")
    assert a["name"] == "a"
    await add_rule(api, acme, policy_id, user_id, "b")
    await add_rule(api, acme, policy_id, user_id, "c")
    assert await orders(api, acme, policy_id) == ["a", "b", "c"]
    await add_rule(api, acme, policy_id, user_id, "first", order=1)
    assert await orders(api, acme, policy_id) == ["first", "a", "b", "c"]
    await add_rule(api, acme, policy_id, user_id, "third", order=3)
    assert await orders(api, acme, policy_id) == ["first", "a", "third", "b", "c"]
    await add_rule(api, acme, policy_id, user_id, "far", order=99)  # past the end: last
    assert await orders(api, acme, policy_id) == ["first", "a", "third", "b", "c", "far"]


async def test_rule_move_and_delete_keep_order_dense(api, acme, policy_with_user):
    policy_id, user_id = policy_with_user
    ids = {}
    for name in "abcde":
        ids[name] = (await add_rule(api, acme, policy_id, user_id, name))["_id"]
    await api.call("PUT", f"{RULES}/{ids['d']}", acme.owner, {"data": {"order": 2}})
    assert await orders(api, acme, policy_id) == ["a", "d", "b", "c", "e"]
    await api.call("PUT", f"{RULES}/{ids['a']}", acme.owner, {"data": {"order": 4}})
    assert await orders(api, acme, policy_id) == ["d", "b", "c", "a", "e"]
    await api.call("PUT", f"{RULES}/{ids['d']}", acme.owner, {"data": {"order": 50}})
    assert await orders(api, acme, policy_id) == ["b", "c", "a", "e", "d"]
    await api.call("DELETE", f"{RULES}/{ids['c']}", acme.owner)
    assert await orders(api, acme, policy_id) == ["b", "a", "e", "d"]
    status, message = await error_of(api, "PUT", f"{RULES}/{ids['a']}", acme.owner, {"data": {"order": 0}})
    assert (status, message) == (400, "data.order: must be 1 or more")


async def test_rule_needs_exactly_one_target(api, acme, policy_with_user):
    policy_id, user_id = policy_with_user
    team = await api.create("team", acme.owner, {"name": "SRE"})
    status, message = await error_of(api, "POST", RULES, acme.owner, {"data": {"incomingCallPolicyId": policy_id}})
    assert status == 400 and "needs a target" in message and "userId" in message and "teamId" in message
    status, message = await error_of(api, "POST", RULES, acme.owner, {"data": {
        "incomingCallPolicyId": policy_id, "userId": user_id, "teamId": team["_id"]}})
    assert status == 400 and "userId and teamId" in message and "only one" in message
    rule = await add_rule(api, acme, policy_id, user_id, "r")
    status, message = await error_of(api, "PUT", f"{RULES}/{rule['_id']}", acme.owner,
                                     {"data": {"teamId": team["_id"]}})
    assert status == 400 and "userId and teamId" in message
    await api.call("PUT", f"{RULES}/{rule['_id']}", acme.owner, {"data": {"teamId": team["_id"], "userId": None}})
    item = await get(api, acme, "incoming-call-policy-escalation-rule", rule["_id"], "teamId", "userId")
    assert item["teamId"] == team["_id"] and item["userId"] is None
    status, message = await error_of(api, "POST", RULES, acme.owner, {"data": {
        "incomingCallPolicyId": policy_id, "onCallDutyPolicyScheduleId": str(uuid.uuid4())}})
    assert status == 400 and "no On-Call Duty Policy Schedule with id" in message
    schedule = await api.create("on-call-duty-policy-schedule", acme.owner, {"name": f"Primary {uuid.uuid4().hex}"})
    await add_rule(api, acme, policy_id, None, "s", onCallDutyPolicyScheduleId=schedule["_id"])


async def test_rule_defaults_and_bounds(api, acme, policy_with_user):
    policy_id, user_id = policy_with_user
    rule = await add_rule(api, acme, policy_id, user_id, "r")
    assert (await get(api, acme, "incoming-call-policy-escalation-rule", rule["_id"],
                      "escalateAfterSeconds"))["escalateAfterSeconds"] == 30
    status, message = await error_of(api, "POST", RULES, acme.owner, {"data": {
        "incomingCallPolicyId": policy_id, "userId": user_id, "escalateAfterSeconds": 0}})
    assert status == 400 and "between 1 and 3600" in message
    status, message = await error_of(api, "PUT", f"{RULES}/{rule['_id']}", acme.owner,
                                     {"data": {"incomingCallPolicyId": str(uuid.uuid4())}})
    assert status == 400 and "cannot be changed" in message


async def test_deleting_a_user_still_targeted_by_a_rule_is_409(api, acme, policy_with_user):
    policy_id, user_id = policy_with_user
    await add_rule(api, acme, policy_id, user_id, "r")
    status, message = await error_of(api, "DELETE", f"/api/user/{user_id}", acme.owner, None)
    assert status == 409 and "still used" in message


# -- numbers ------------------------------------------------------------------------------


async def test_numbers_phone_or_sip_uri(api, acme):
    user = await api.create("user", acme.owner, {"name": "Bob"})
    phone = await api.create("user-incoming-call-number", acme.owner,
                             {"userId": user["_id"], "phoneNumber": "+33 1 23 45 67 89"})
    assert phone["phoneNumber"] == "+33123456789"
    sip = await api.create("user-incoming-call-number", acme.owner,
                           {"userId": user["_id"], "sipUri": "sip:bob@10.0.0.5:5060"})
    assert sip["sipUri"] == "sip:bob@10.0.0.5:5060"
    item = await get(api, acme, "user-incoming-call-number", sip["_id"], "isVerified")
    assert item["isVerified"] is False  # numbers start unverified
    for data, message in [
        ({"userId": user["_id"]}, "needs either phoneNumber"),
        ({"userId": user["_id"], "phoneNumber": "+14155550100", "sipUri": "sip:a@10.0.0.9"}, "not both"),
        ({"userId": user["_id"], "sipUri": "http://example.com"}, "is not a SIP URI"),
        ({"userId": user["_id"], "sipUri": "sip:a@b:70000"}, "between 1 and 65535"),
        ({"userId": user["_id"], "phoneNumber": "555"}, "data.phoneNumber:"),
        ({"userId": str(uuid.uuid4()), "phoneNumber": "+14155550100"}, "no User with id"),
    ]:
        status, error = await error_of(api, "POST", "/api/user-incoming-call-number", acme.owner, {"data": data})
        assert status == 400 and message in error, (data, error)


async def test_verification_is_read_only_and_reset_when_the_number_changes(api, acme):
    user = await api.create("user", acme.owner, {"name": "Carol"})
    number = await api.create("user-incoming-call-number", acme.keys["admin"],
                              {"userId": user["_id"], "phoneNumber": "+14155550123", "isVerified": True})
    status, message = await error_of(api, "POST", "/api/user-incoming-call-number", acme.keys["member"],
                                     {"data": {"userId": user["_id"], "sipUri": "sip:c@h", "isVerified": True}})
    assert status == 403 and "Owner or Project Admin" in message
    status, message = await error_of(api, "PUT", f"/api/user-incoming-call-number/{number['_id']}",
                                     acme.owner, {"data": {"isVerified": True}})
    assert status == 400 and "isVerified: is read-only" in message
    await api.call("PUT", f"/api/user-incoming-call-number/{number['_id']}", acme.keys["member"],
                   {"data": {"phoneNumber": "+14155550124"}})
    item = await get(api, acme, "user-incoming-call-number", number["_id"], "isVerified", "phoneNumber")
    assert item == {"_id": number["_id"], "isVerified": False, "phoneNumber": "+14155550124"}


# -- users, teams, labels -------------------------------------------------------------


async def test_user_validation(api, acme):
    await api.create("user", acme.owner, {"name": "Dan", "email": "Dan@Example.com", "timeZone": "America/New_York"})
    status, message = await error_of(api, "POST", "/api/user", acme.owner,
                                     {"data": {"name": "Dan 2", "email": "dan@example.com"}})
    assert status == 409 and "already exists" in message
    status, message = await error_of(api, "POST", "/api/user", acme.owner, {"data": {"name": "E", "email": "nope"}})
    assert status == 400 and "not an email address" in message
    status, message = await error_of(api, "POST", "/api/user", acme.owner,
                                     {"data": {"name": "E", "timeZone": "Mars/Olympus"}})
    assert status == 400 and "not an IANA time zone" in message


async def test_team_members(api, acme):
    team = await api.create("team", acme.owner, {"name": "SRE"})
    user = await api.create("user", acme.owner, {"name": "Eve"})
    member = await api.create("team-member", acme.owner, {"teamId": team["_id"], "userId": user["_id"]})
    status, message = await error_of(api, "POST", "/api/team-member", acme.owner,
                                     {"data": {"teamId": team["_id"], "userId": user["_id"]}})
    assert (status, message) == (409, "This user is already a member of this team.")
    listed = await api.post("/api/team-member/get-list", acme.owner, {
        "query": {"teamId": team["_id"]}, "select": {"user": {"name": True}, "team": {"name": True}}})
    assert listed["data"] == [{"_id": member["_id"], "user": {"_id": user["_id"], "name": "Eve"},
                               "team": {"_id": team["_id"], "name": "SRE"}}]
    await api.call("DELETE", f"/api/team/{team['_id']}", acme.owner)
    assert (await api.post("/api/team-member/count", acme.owner, {"query": {"teamId": team["_id"]}}))["count"] == 0


async def test_label_names_are_unique_per_project(api, acme):
    await api.create("label", acme.owner, {"name": "prod", "color": "#ff0000"})
    status, message = await error_of(api, "POST", "/api/label", acme.owner, {"data": {"name": "prod"}})
    assert (status, message) == (409, "A Label named 'prod' already exists in this project.")
    other = await api.tenant("Other")
    await api.create("label", other.owner, {"name": "prod"})
