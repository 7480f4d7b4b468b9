"""The contact center's configuration resources (call-menu, call-menu-agent, end-user, crm-ticket,
outbound-phone-number) and the agent fields of users: each rule of api/contact_center_rules.py, on
both databases. Keys, roles and project isolation are the generic matrices' (test_permissions.py,
test_isolation.py), which list these resources too.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import new_id
from tests.api.factories import token, unique_phone


async def fails(api, method, path, key, data, status=400):
    """The error message of a request that must fail with ``status``."""
    got, body = await api.call(method, path, key, {"data": data} if data is not None else None, expect=None)
    assert got == status, f"{method} {path} {data} -> {got} {body}"
    assert set(body) == {"error"}, body
    return body["error"]


async def menu(api, key, **data) -> dict:
    return await api.create("call-menu", key, {"name": f"Menu {token()}", **data})


async def item(api, key, path, row_id, *fields) -> dict:
    return await api.post(f"/api/{path}/{row_id}/get-item", key, {"select": {f: True for f in fields}})


async def agent(api, key, **data) -> dict:
    return await api.create("user", key, {"name": f"Agent {token()}", "isAgent": True, **data})


# -- call-menu: the tree ------------------------------------------------------------------------------


async def test_parent_is_in_the_callers_project(api, acme):
    other = await api.tenant("Other", roles=("owner",))
    foreign = await menu(api, other.owner)
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "Child", "parentId": foreign["_id"]})
    assert "parentId" in message and "in your project" in message and foreign["name"] not in message
    root = await menu(api, acme.owner)
    message = await fails(api, "PUT", f"/api/call-menu/{root['_id']}", acme.owner, {"parentId": foreign["_id"]})
    assert "parentId" in message
    assert (await item(api, acme.owner, "call-menu", root["_id"], "parentId"))["parentId"] is None


async def test_a_child_has_its_parents_type(api, acme):
    web = await menu(api, acme.owner, menuType="web_menu")
    child = await menu(api, acme.owner, parentId=web["_id"])  # defaulted from the parent
    assert child["menuType"] == "web_menu"
    message = await fails(api, "POST", "/api/call-menu", acme.owner,
                          {"name": "Phone child", "parentId": web["_id"], "menuType": "ivr_menu"})
    assert "menuType" in message and "parent's type" in message and "web_menu" in message
    message = await fails(api, "PUT", f"/api/call-menu/{child['_id']}", acme.owner, {"menuType": "mobile_menu"})
    assert "parent's type" in message
    # A moved menu takes its new parent's type; a root's new type is its subtree's.
    ivr = await menu(api, acme.owner)
    await api.call("PUT", f"/api/call-menu/{child['_id']}", acme.owner, {"data": {"parentId": ivr["_id"]}})
    assert (await item(api, acme.owner, "call-menu", child["_id"], "menuType"))["menuType"] == "ivr_menu"
    grandchild = await menu(api, acme.owner, parentId=child["_id"])
    await api.call("PUT", f"/api/call-menu/{ivr['_id']}", acme.owner, {"data": {"menuType": "mobile_menu"}})
    for row in (child, grandchild):
        assert (await item(api, acme.owner, "call-menu", row["_id"], "menuType"))["menuType"] == "mobile_menu"


async def test_the_tree_never_has_a_cycle(api, acme):
    a = await menu(api, acme.owner)
    b = await menu(api, acme.owner, parentId=a["_id"])
    c = await menu(api, acme.owner, parentId=b["_id"])
    for target in (c, b, a):
        message = await fails(api, "PUT", f"/api/call-menu/{a['_id']}", acme.owner, {"parentId": target["_id"]})
        assert "cycle" in message
    assert (await item(api, acme.owner, "call-menu", a["_id"], "parentId"))["parentId"] is None
    await api.call("PUT", f"/api/call-menu/{c['_id']}", acme.owner, {"data": {"parentId": a["_id"]}})  # fine


async def test_deleting_a_menu_with_children_is_409(api, acme):
    root = await menu(api, acme.owner, name="Main")
    child = await menu(api, acme.owner, parentId=root["_id"])
    message = await fails(api, "DELETE", f"/api/call-menu/{root['_id']}", acme.owner, None, status=409)
    assert "'Main'" in message and "1 child menu" in message
    await api.call("DELETE", f"/api/call-menu/{child['_id']}", acme.owner)
    await api.call("DELETE", f"/api/call-menu/{root['_id']}", acme.owner)


# -- call-menu: fields ------------------------------------------------------------------------------------


async def test_languages(api, acme):
    created = await menu(api, acme.owner, languages=["fr", "en", "fr"])
    assert created["languages"] == ["fr", "en"]
    assert (await menu(api, acme.owner))["languages"] == ["en"]
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "languages": ["en", "xy"]})
    assert "'xy'" in message and "ISO 639-1" in message
    for bad in ([], "en", [1], {"en": True}, ["EN"]):
        message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "languages": bad})
        assert "languages" in message
    await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner, {"languages": ["zz"]})


async def test_opening_hours_and_time_zone(api, acme):
    created = await menu(api, acme.owner, timeZone="Europe/Paris", openingHours=[
        {"type": "Daily", "startTime": "9:00", "endTime": "17:00", "days": ["mon", "Tue"]}])
    assert created["openingHours"] == [{"type": "Daily", "startTime": "09:00", "endTime": "17:00",
                                        "days": ["Monday", "Tuesday"]}]
    message = await fails(api, "POST", "/api/call-menu", acme.owner,
                          {"name": "X", "openingHours": [{"type": "Daily", "startTime": "25:00", "endTime": "17:00"}]})
    assert message.startswith("data.openingHours[0].startTime: '25:00' is not a time of day")
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "openingHours": {"type": "Daily"}})
    assert "openingHours" in message and "list" in message
    message = await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner, {"timeZone": "Mars/Olympus"})
    assert "timeZone" in message


async def test_redirection(api, acme):
    created = await menu(api, acme.owner, redirectionNumber="(415) 555-0123", state="manual_redirection")
    assert created["redirectionNumber"] == "+14155550123"
    message = await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner, {"redirectionNumber": "123"})
    assert "redirectionNumber" in message
    message = await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner,
                          {"redirectionMenuId": created["_id"]})
    assert "itself" in message
    other = await api.tenant("Other", roles=("owner",))
    foreign = await menu(api, other.owner)
    message = await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner,
                          {"redirectionMenuId": foreign["_id"]})
    assert "redirectionMenuId" in message and "in your project" in message
    target = await menu(api, acme.owner)
    await api.call("PUT", f"/api/call-menu/{created['_id']}", acme.owner, {"data": {"redirectionMenuId": target["_id"]}})


async def test_numbers_ranges_and_enums(api, acme):
    for data, name in (({"cascadeGroupDelaySeconds": 0}, "cascadeGroupDelaySeconds"),
                       ({"cascadeGroupDelaySeconds": 3601}, "cascadeGroupDelaySeconds"),
                       ({"position": -1}, "position"), ({"state": "closed"}, "state"),
                       ({"menuType": "fax_menu"}, "menuType"), ({"offerType": "random"}, "offerType"),
                       ({"recordingOption": "sometimes"}, "recordingOption"), ({"name": "  "}, "name"),
                       ({"maxWaitSeconds": 4}, "maxWaitSeconds"), ({"voicemailMaxSeconds": 601}, "voicemailMaxSeconds"),
                       ({"noAgentDeflection": "redirection"}, "noAgentDeflection"),
                       ({"afterHoursDeflection": "redirection"}, "afterHoursDeflection"),
                       ({"callbackDelaySeconds": 4}, "callbackDelaySeconds")):
        message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", **data})
        assert name in message
    created = await menu(api, acme.owner, cascadeGroupDelaySeconds=3600, position=0, state="after_hours",
                         offerType="cascade", recordingOption="ask")
    assert (created["cascadeGroupDelaySeconds"], created["state"]) == (3600, "after_hours")
    assert (created["maxWaitSeconds"], created["noAgentDeflection"], created["afterHoursDeflection"],
            created["voicemailMaxSeconds"]) == (120, "voicemail", "voicemail", 120)
    await fails(api, "PUT", f"/api/call-menu/{created['_id']}", acme.owner, {"cascadeGroupDelaySeconds": 0})
    await fails(api, "POST", "/api/call-menu", acme.owner, {"menuType": "ivr_menu"})  # name is required


async def test_numeric_ids_are_given_and_read_only(api, acme):
    first, second = await menu(api, acme.owner), await menu(api, acme.owner)
    assert isinstance(first["numericId"], int) and second["numericId"] > first["numericId"]
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "numericId": 7})
    assert "numericId" in message and "read-only" in message
    await fails(api, "PUT", f"/api/call-menu/{first['_id']}", acme.owner, {"numericId": 7})
    user = await agent(api, acme.owner)
    assert isinstance(user["numericId"], int)
    await fails(api, "PUT", f"/api/user/{user['_id']}", acme.owner, {"numericId": 1})
    end_user = await api.create("end-user", acme.owner, {"name": "Eve"})
    assert isinstance(end_user["numericId"], int)
    await fails(api, "POST", "/api/end-user", acme.owner, {"numericId": 1})


# -- call-menu: routing numbers (a number routes to one thing) ----------------------------------------------


async def test_routing_number_only_on_a_root_ivr_menu(api, acme):
    number = unique_phone()
    root = await menu(api, acme.owner, routingPhoneNumber=number[2:])  # national: read in the default region
    assert root["routingPhoneNumber"] == number
    message = await fails(api, "POST", "/api/call-menu", acme.owner,
                          {"name": "Child", "parentId": root["_id"], "routingPhoneNumber": unique_phone()})
    assert "routingPhoneNumber" in message and "root" in message
    message = await fails(api, "POST", "/api/call-menu", acme.owner,
                          {"name": "Web", "menuType": "web_menu", "routingPhoneNumber": unique_phone()})
    assert "ivr_menu" in message
    message = await fails(api, "PUT", f"/api/call-menu/{root['_id']}", acme.owner, {"menuType": "web_menu"})
    assert "ivr_menu" in message
    other_root = await menu(api, acme.owner)
    message = await fails(api, "PUT", f"/api/call-menu/{root['_id']}", acme.owner, {"parentId": other_root["_id"]})
    assert "root" in message
    await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "routingPhoneNumber": "12"})


async def test_routing_number_is_unique_among_menus_and_policies(api, acme):
    number = unique_phone()
    await menu(api, acme.owner, name="Main line", routingPhoneNumber=number)
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "Again", "routingPhoneNumber": number},
                          status=409)
    assert number in message and "the Call Menu 'Main line'" in message
    message = await fails(api, "POST", "/api/incoming-call-policy", acme.owner,
                          {"name": f"P {token()}", "routingPhoneNumber": number}, status=409)
    assert "the Call Menu 'Main line'" in message
    policy_number = unique_phone()
    policy = await api.create("incoming-call-policy", acme.owner, {"name": f"Ops {token()}",
                                                                   "routingPhoneNumber": policy_number})
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "routingPhoneNumber": policy_number},
                          status=409)
    assert f"the Incoming Call Policy {policy['name']!r}" in message
    free = await menu(api, acme.owner)
    await fails(api, "PUT", f"/api/call-menu/{free['_id']}", acme.owner, {"routingPhoneNumber": policy_number},
                status=409)
    await fails(api, "PUT", f"/api/incoming-call-policy/{policy['_id']}", acme.owner, {"routingPhoneNumber": number},
                status=409)
    # Another project's holder is not named.
    other = await api.tenant("Other", roles=("owner",))
    message = await fails(api, "POST", "/api/call-menu", other.owner, {"name": "X", "routingPhoneNumber": number},
                          status=409)
    assert "a Call Menu of another project" in message and "Main line" not in message
    # A menu keeps its own number on update.
    mine = await menu(api, acme.owner, routingPhoneNumber=unique_phone())
    await api.call("PUT", f"/api/call-menu/{mine['_id']}", acme.owner,
                   {"data": {"routingPhoneNumber": mine["routingPhoneNumber"], "name": "Renamed"}})


# -- call-menu: leaves that hand calls to an Incoming Call Policy ---------------------------------------------


async def test_policy_target_is_in_the_project_and_a_leaf(api, acme):
    policy = await api.create("incoming-call-policy", acme.owner, {"name": f"Ops {token()}"})
    other = await api.tenant("Other", roles=("owner",))
    foreign = await api.create("incoming-call-policy", other.owner, {"name": f"Theirs {token()}"})
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "X", "incomingCallPolicyId": foreign["_id"]})
    assert "incomingCallPolicyId" in message and "in your project" in message
    leaf = await menu(api, acme.owner, name="To ops", incomingCallPolicyId=policy["_id"])
    message = await fails(api, "POST", "/api/call-menu", acme.owner, {"name": "Child", "parentId": leaf["_id"]})
    assert "'To ops'" in message and "child menus" in message
    user = await agent(api, acme.owner)
    message = await fails(api, "POST", "/api/call-menu-agent", acme.owner,
                          {"callMenuId": leaf["_id"], "userId": user["_id"]})
    assert "no queue" in message
    # The other direction: a menu with children, or with agents, cannot take a policy.
    parent = await menu(api, acme.owner)
    await menu(api, acme.owner, parentId=parent["_id"])
    message = await fails(api, "PUT", f"/api/call-menu/{parent['_id']}", acme.owner,
                          {"incomingCallPolicyId": policy["_id"]})
    assert "child menu" in message
    queue = await menu(api, acme.owner)
    await api.create("call-menu-agent", acme.owner, {"callMenuId": queue["_id"], "userId": user["_id"]})
    message = await fails(api, "PUT", f"/api/call-menu/{queue['_id']}", acme.owner,
                          {"incomingCallPolicyId": policy["_id"]})
    assert "agent" in message
    # A policy a menu hands calls to is not deleted from under it.
    message = await fails(api, "DELETE", f"/api/incoming-call-policy/{policy['_id']}", acme.owner, None, status=409)
    assert "'To ops'" in message


# -- call-menu-agent -----------------------------------------------------------------------------------


async def test_queue_agents(api, acme):
    queue = await menu(api, acme.owner)
    plain = await api.create("user", acme.owner, {"name": "Not an agent"})
    message = await fails(api, "POST", "/api/call-menu-agent", acme.owner,
                          {"callMenuId": queue["_id"], "userId": plain["_id"]})
    assert "userId" in message and "not an agent" in message and "isAgent" in message
    other = await api.tenant("Other", roles=("owner",))
    foreign = await agent(api, other.owner)
    message = await fails(api, "POST", "/api/call-menu-agent", acme.owner,
                          {"callMenuId": queue["_id"], "userId": foreign["_id"]})
    assert "userId" in message and "in your project" in message
    user = await agent(api, acme.owner)
    for data, name in (({"userId": user["_id"]}, "callMenuId"), ({"callMenuId": queue["_id"]}, "userId"),
                       ({"callMenuId": queue["_id"], "userId": user["_id"], "groupNumber": 0}, "groupNumber")):
        assert name in await fails(api, "POST", "/api/call-menu-agent", acme.owner, data)
    created = await api.create("call-menu-agent", acme.owner, {"callMenuId": queue["_id"], "userId": user["_id"],
                                                               "groupNumber": 2})
    assert created["groupNumber"] == 2
    message = await fails(api, "POST", "/api/call-menu-agent", acme.owner,
                          {"callMenuId": queue["_id"], "userId": user["_id"]}, status=409)
    assert "already an agent" in message
    await fails(api, "PUT", f"/api/call-menu-agent/{created['_id']}", acme.owner, {"groupNumber": 0})
    for name in ("callMenuId", "userId"):
        message = await fails(api, "PUT", f"/api/call-menu-agent/{created['_id']}", acme.owner, {name: new_id()})
        assert "cannot be changed" in message
    await api.call("PUT", f"/api/call-menu-agent/{created['_id']}", acme.owner, {"data": {"groupNumber": 3}})


# -- end-user, crm-ticket ----------------------------------------------------------------------------------


async def test_end_users(api, acme):
    created = await api.create("end-user", acme.owner, {"phoneNumber": "+44 20 7946 0958", "name": "Eve",
                                                        "identifier": "cust-1", "outContactId": "c-9"})
    assert created["phoneNumber"] == "+442079460958"
    message = await fails(api, "POST", "/api/end-user", acme.owner, {"phoneNumber": "+1 555"})
    assert "phoneNumber" in message and "not a" in message
    await fails(api, "PUT", f"/api/end-user/{created['_id']}", acme.owner, {"phoneNumber": "nope"})
    await api.call("PUT", f"/api/end-user/{created['_id']}", acme.owner, {"data": {"phoneNumber": "415 555 0100"}})
    assert (await item(api, acme.owner, "end-user", created["_id"], "phoneNumber"))["phoneNumber"] == "+14155550100"


async def test_crm_tickets(api, acme):
    end_user = await api.create("end-user", acme.owner, {"name": "Eve"})
    ticket = await api.create("crm-ticket", acme.owner, {"ticketId": "T-1", "endUserId": end_user["_id"],
                                                         "url": "https://crm.example.com/T-1"})
    assert ticket["endUserId"] == end_user["_id"]
    message = await fails(api, "POST", "/api/crm-ticket", acme.owner, {"ticketId": "T-1", "endUserId": end_user["_id"]},
                          status=409)
    assert "'T-1'" in message
    assert "ticketId" in await fails(api, "POST", "/api/crm-ticket", acme.owner, {"endUserId": end_user["_id"]})
    assert "endUserId" in await fails(api, "POST", "/api/crm-ticket", acme.owner, {"ticketId": "T-2"})
    other = await api.tenant("Other", roles=("owner",))
    theirs = await api.create("end-user", other.owner, {"name": "Mallory"})
    message = await fails(api, "POST", "/api/crm-ticket", acme.owner, {"ticketId": "T-3", "endUserId": theirs["_id"]})
    assert "endUserId" in message and "in your project" in message
    await api.create("crm-ticket", other.owner, {"ticketId": "T-1", "endUserId": theirs["_id"]})  # per project
    message = await fails(api, "POST", "/api/crm-ticket", acme.owner,
                          {"ticketId": "T-4", "endUserId": end_user["_id"], "url": "javascript:alert(1)"})
    assert "url" in message
    second = await api.create("crm-ticket", acme.owner, {"ticketId": "T-5", "endUserId": end_user["_id"]})
    await fails(api, "PUT", f"/api/crm-ticket/{second['_id']}", acme.owner, {"ticketId": "T-1"}, status=409)


# -- outbound-phone-number ----------------------------------------------------------------------------------


async def test_outbound_numbers(api, acme):
    number = unique_phone()
    first = await api.create("outbound-phone-number", acme.owner, {"phoneNumber": number[2:], "name": "Sales",
                                                                   "isDefault": True})
    assert (first["phoneNumber"], first["isDefault"]) == (number, True)
    message = await fails(api, "POST", "/api/outbound-phone-number", acme.owner, {"phoneNumber": number}, status=409)
    assert number in message
    assert "phoneNumber" in await fails(api, "POST", "/api/outbound-phone-number", acme.owner, {"name": "No number"})
    assert "phoneNumber" in await fails(api, "POST", "/api/outbound-phone-number", acme.owner, {"phoneNumber": "42"})
    other = await api.tenant("Other", roles=("owner",))
    theirs = await api.create("outbound-phone-number", other.owner, {"phoneNumber": number, "isDefault": True})

    async def defaults():
        page = await api.post("/api/outbound-phone-number/get-list", acme.owner,
                              {"query": {"isDefault": True}, "select": {"_id": True}})
        return [row["_id"] for row in page["data"]]

    assert await defaults() == [first["_id"]]
    second = await api.create("outbound-phone-number", acme.owner, {"phoneNumber": unique_phone(), "isDefault": True})
    assert await defaults() == [second["_id"]]
    await api.call("PUT", f"/api/outbound-phone-number/{first['_id']}", acme.owner, {"data": {"isDefault": True}})
    assert await defaults() == [first["_id"]]
    await api.create("outbound-phone-number", acme.owner, {"phoneNumber": unique_phone()})
    assert await defaults() == [first["_id"]]
    # Another project's default is its own.
    assert (await item(api, other.owner, "outbound-phone-number", theirs["_id"], "isDefault"))["isDefault"] is True


# -- user: the agent fields ------------------------------------------------------------------------------


async def test_agent_fields_of_users(api, acme):
    created = await api.create("user", acme.owner, {"name": "Ann", "isAgent": True, "agentNumber": "1001",
                                                    "canMakeOutboundCalls": False, "agentAvailability": "Unavailable",
                                                    "avatarUrl": "https://example.com/ann.png"})
    assert (created["isAgent"], created["agentNumber"], created["canMakeOutboundCalls"],
            created["agentAvailability"]) == (True, "1001", False, "Unavailable")
    plain = await api.create("user", acme.owner, {"name": "Ben"})
    assert (plain["isAgent"], plain["canMakeOutboundCalls"], plain["agentAvailability"]) == (False, True, "Available")
    message = await fails(api, "POST", "/api/user", acme.owner, {"name": "X", "agentAvailability": "Busy"})
    assert message == "data.agentAvailability: must be one of Available, Unavailable"
    await fails(api, "PUT", f"/api/user/{created['_id']}", acme.owner, {"agentAvailability": "available"})
    assert "avatarUrl" in await fails(api, "PUT", f"/api/user/{created['_id']}", acme.owner,
                                      {"avatarUrl": "javascript:alert(1)"})
    assert "isAgent" in await fails(api, "PUT", f"/api/user/{created['_id']}", acme.owner, {"isAgent": "yes"})
    await api.call("PUT", f"/api/user/{plain['_id']}", acme.owner, {"data": {"isAgent": True,
                                                                            "agentAvailability": "Unavailable"}})
    row = await item(api, acme.owner, "user", plain["_id"], "isAgent", "agentAvailability")
    assert (row["isAgent"], row["agentAvailability"]) == (True, "Unavailable")


@pytest.mark.parametrize("path", ["call-menu", "call-menu-agent", "end-user", "crm-ticket", "outbound-phone-number"])
async def test_documented(api, acme, path):
    document = await api.call("GET", "/api/openapi.json")
    title = {"call-menu": "CallMenu", "call-menu-agent": "CallMenuAgent", "end-user": "EndUser",
             "crm-ticket": "CRMTicket", "outbound-phone-number": "OutboundPhoneNumber"}[path]
    assert title in document["components"]["schemas"]
    assert f"/api/{path}/get-list" in document["paths"] and f"/api/{path}" in document["paths"]
    if "numericId" in document["components"]["schemas"][title]["properties"]:
        create = document["paths"][f"/api/{path}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "numericId" not in str(create)
