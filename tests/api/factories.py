"""Builders shared by the isolation, permission and fuzz tests: one project with a row of every resource.

``build_graph`` fills a project through the API (with its owner key) and inserts the
read-only logs directly through the models, as the call engine does. ``snapshot``
reads every row of every resource back through a key of that project, as canonical
JSON text, so two snapshots can be compared byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field

from api.registry import RESOURCES
from ivr.store.models import CallLog, IncomingCallLog, IncomingCallLogItem

LOGS = ("incoming-call-log", "incoming-call-log-item", "call-log")


def unique_phone() -> str:
    """A valid, random US number (routing numbers are unique across all projects)."""
    return f"+1415{2000000 + secrets.randbelow(8000000)}"


def account_sid() -> str:
    """A random Twilio account SID (AC and 32 hex digits)."""
    return "AC" + secrets.token_hex(16)


def token() -> str:
    return secrets.token_hex(4)


@dataclass
class Graph:
    """A project with at least one row of every resource; ``ids`` maps a resource path to its rows' ids."""

    project_id: str
    key: str                                   # the project's owner key
    token: str = ""                            # in the names, emails and call ids of this project's rows
    ids: dict[str, list[str]] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)  # "policy", "user", "team", ... -> id
    created: dict[str, dict] = field(default_factory=dict)  # id -> the answer of its create (API rows only)

    def __getitem__(self, name: str) -> str:
        return self.named[name]

    def all_ids(self) -> set[str]:
        return {i for ids in self.ids.values() for i in ids} | {self.project_id}


async def build_graph(api, name: str = "Graph", project_id: str | None = None, key: str | None = None,
                      policy_uses_sms_config: bool = True) -> Graph:
    """A project (new unless given) with labels, users (one an agent), numbers, a team and member, an
    on-call schedule (two layers, their users, an override), a policy with three escalation rules (a
    user, the team, the schedule), the contact center's configuration (outbound numbers, a menu tree
    with a queue agent, end users, a ticket), a Project Call SMS Config (which the policy uses, unless
    ``policy_uses_sms_config`` is false), and one row of each log."""
    if project_id is None:
        tenant = await api.tenant(name, roles=("owner",))
        project_id, key = tenant.project_id, tenant.owner
    tok = token()
    graph = Graph(project_id, key, tok)

    async def make(resource: str, label: str, data: dict) -> str:
        row = await api.create(resource, key, data)
        graph.created[row["_id"]] = row
        graph.ids.setdefault(resource, []).append(row["_id"])
        graph.named[label] = row["_id"]
        return row["_id"]

    label = await make("label", "label", {"name": f"sev1-{tok}", "color": "#ff0000", "description": "Severity 1"})
    label2 = await make("label", "label2", {"name": f"db-{tok}"})
    user = await make("user", "user", {"name": "Alice", "email": f"alice-{tok}@example.com",
                                       "timeZone": "Europe/Paris"})
    user2 = await make("user", "user2", {"name": "Bob", "email": f"bob-{tok}@example.com", "isAgent": True,
                                         "agentNumber": f"A-{tok}", "avatarUrl": "https://example.com/bob.png"})
    phone = unique_phone()
    await make("user-incoming-call-number", "number", {"userId": user, "phoneNumber": phone})
    await make("user-incoming-call-number", "number2",
               {"userId": user2, "sipUri": "sip:bob@10.0.0.5:5060", "isVerified": True})
    team = await make("team", "team", {"name": f"Ops {tok}", "description": "The on-call team"})
    await make("team-member", "member", {"teamId": team, "userId": user})
    await make("team-member", "member2", {"teamId": team, "userId": user2})
    sms_config = await make("project-call-sms-config", "sms_config", {
        "name": f"Own Twilio {tok}", "description": "The project's own account", "twilioAccountSID": account_sid(),
        "twilioAuthToken": secrets.token_hex(16), "twilioPrimaryPhoneNumber": unique_phone()})
    routing = unique_phone()
    policy = await make("incoming-call-policy", "policy", {
        "name": f"Primary {tok}", "description": "Main line", "routingPhoneNumber": routing,
        "labels": [label, label2], "createdByUserId": user, "repeatPolicyIfNoOneAnswers": True,
        "repeatPolicyIfNoOneAnswersTimes": 2,
        "projectCallSMSConfigId": sms_config if policy_uses_sms_config else None})
    rule = await make("incoming-call-policy-escalation-rule", "rule",
                      {"incomingCallPolicyId": policy, "name": "First", "userId": user, "escalateAfterSeconds": 20})
    await make("incoming-call-policy-escalation-rule", "rule2",
               {"incomingCallPolicyId": policy, "name": "Then the team", "teamId": team})
    schedule = await make("on-call-duty-policy-schedule", "schedule",
                          {"name": f"Primary {tok}", "description": "Weekly, days only", "timeZone": "Europe/Paris"})
    layer = await make("on-call-duty-policy-schedule-layer", "layer", {
        "onCallDutyPolicyScheduleId": schedule, "name": f"Weekly {tok}", "startsAt": "2024-01-01T08:00:00Z",
        "rotationInterval": "Week", "handOffTime": "09:00",
        "restrictionTimes": [{"type": "Daily", "startTime": "08:00", "endTime": "20:00"}]})
    await make("on-call-duty-policy-schedule-layer", "layer2", {
        "onCallDutyPolicyScheduleId": schedule, "startsAt": "2024-01-01T00:00:00Z", "rotationInterval": "Day"})
    await make("on-call-duty-policy-schedule-layer-user", "layer_user",
               {"onCallDutyPolicyScheduleLayerId": layer, "userId": user})
    await make("on-call-duty-policy-schedule-layer-user", "layer_user2",
               {"onCallDutyPolicyScheduleLayerId": layer, "userId": user2})
    await make("on-call-duty-policy-schedule-override", "override", {
        "onCallDutyPolicyScheduleId": schedule, "userId": user2, "startsAt": "2024-05-01T00:00:00Z",
        "endsAt": "2024-05-02T00:00:00Z", "description": f"Swap {tok}"})
    await make("incoming-call-policy-escalation-rule", "rule3",
               {"incomingCallPolicyId": policy, "name": "Then whoever is on call",
                "onCallDutyPolicyScheduleId": schedule})

    # The contact center: outbound numbers, a menu tree (a root with a routing number, a queue, a leaf
    # handing calls to the policy), an agent in the queue, end users and a ticket.
    outbound = await make("outbound-phone-number", "outbound", {"phoneNumber": unique_phone(), "name": f"Sales {tok}",
                                                                "isDefault": True})
    await make("outbound-phone-number", "outbound2", {"phoneNumber": unique_phone()})
    root = await make("call-menu", "menu", {
        "name": f"Main {tok}", "routingPhoneNumber": unique_phone(), "outputMessage": "Welcome to Acme.",
        "languages": ["en", "fr"], "timeZone": "Europe/Paris", "outboundPhoneNumberId": outbound,
        "openingHours": [{"type": "Daily", "startTime": "08:00", "endTime": "20:00"}]})
    queue = await make("call-menu", "menu_queue", {
        "name": f"Sales {tok}", "parentId": root, "position": 0, "offerType": "cascade",
        "cascadeGroupDelaySeconds": 15, "recordingOption": "ask", "redirectionMenuId": root,
        "redirectionNumber": unique_phone()})
    await make("call-menu", "menu_policy", {"name": f"Ops {tok}", "parentId": root, "position": 1,
                                            "incomingCallPolicyId": policy})
    await make("call-menu-agent", "menu_agent", {"callMenuId": queue, "userId": user2, "groupNumber": 1})
    end_user = await make("end-user", "end_user", {"name": f"Eve {tok}", "phoneNumber": unique_phone(),
                                                   "identifier": f"cust-{tok}", "outContactId": f"crm-{tok}"})
    await make("end-user", "end_user2", {"identifier": f"anon-{tok}"})
    await make("crm-ticket", "ticket", {"ticketId": f"T-{tok}", "endUserId": end_user,
                                        "url": f"https://crm.example.com/T-{tok}"})

    started = dt.datetime(2024, 5, 1, 12, 0, 0)
    log = await IncomingCallLog.acreate(
        project=project_id, incomingCallPolicyId=policy, callerPhoneNumber=unique_phone(),
        routingPhoneNumber=routing, callProviderCallId=f"call-{tok}", status="Completed",
        statusMessage="Answered by Alice", callDurationInSeconds=42, callCostInUSDCents=3,
        startedAt=started, endedAt=started + dt.timedelta(seconds=42), answeredByUserId=user,
        currentEscalationRuleOrder=1)
    item = await IncomingCallLogItem.acreate(
        project=project_id, incomingCallLog=log.id, incomingCallPolicyEscalationRuleId=rule,
        escalationRuleOrder=1, userId=user, userIncomingCallNumberId=graph["number"], numberDialed=phone,
        callProviderCallId=f"leg-{tok}", status="Completed", isAnswered=True, dialDurationInSeconds=4.5,
        startedAt=started, endedAt=started + dt.timedelta(seconds=42))
    call = await CallLog.acreate(
        project=project_id, toNumber=phone, fromNumber=routing, callData={"text": "Incident #1"},
        statusMessage="Delivered", status="Success", callCostInUSDCents=2, user=user, teamId=team)
    sparse = await CallLog.acreate(project=project_id, toNumber=phone)  # no status yet, no user, no team
    for resource, label_name, row in (("incoming-call-log", "log", log), ("incoming-call-log-item", "log_item", item),
                                      ("call-log", "call_log", call), ("call-log", "call_log2", sparse)):
        graph.ids.setdefault(resource, []).append(str(row.id))
        graph.named[label_name] = str(row.id)
    return graph


def full_select(resource) -> dict:
    """Every field; and the ids of many-to-many relations (a policy's labels), which are data too."""
    select: dict = {name: True for name in resource.schema.fields}
    for name in resource.extra_writable:
        select[name] = {"_id": True}
    return select


async def snapshot(api, key: str) -> str:
    """Every row of every resource the key can read, every field, in a stable order, as JSON text."""
    out = {}
    for resource in RESOURCES:
        rows = []
        skip = 0
        while True:
            page = await api.post(f"/api/{resource.path}/get-list", key,
                                  {"select": full_select(resource), "sort": {"_id": 1}},
                                  params={"skip": str(skip), "limit": "100"})
            rows += page["data"]
            skip += 100
            if skip >= page["count"]:
                break
        out[resource.path] = rows
    return json.dumps(out, sort_keys=True, separators=(",", ":"))
