"""What the dashboard's pages read: synchronous peewee code run through the read path (``app[READ]``).

Every read goes through the API's own resources (``api.registry``): the key's project is forced into
every query, and each read needs the same permission as the API's ``get-list`` (a page that needs a
resource the key may not read raises ``Forbidden``; optional parts are left out instead). Relations
are resolved here to names only when the key may read their target (a key that reads logs but not
users sees user ids, never names).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from api.registry import BY_PATH
from api.resources import Context
from api.schema import format_datetime
from ivr.core.vocabulary import TERMINAL_STATUSES, CallStatus
from ivr.store import models as m
from ivr.store.db import on_reader

OPEN_STATUSES = [s.value for s in CallStatus if s not in TERMINAL_STATUSES]
STATUSES = [s.value for s in CallStatus]
#: How long a finished call stays on the live page.
RECENT = dt.timedelta(minutes=5)
MAX_LIST = 1000


def can(ctx: Context, path: str, verb: str = "read") -> bool:
    return ctx.principal.grants(verb, BY_PATH[path].title)


def rows(ctx: Context, path: str, fields: Iterable[str], query: dict | None = None,
         sort: dict | None = None, limit: int = 100, skip: int = 0) -> tuple[int, list[dict]]:
    """``get-list`` of a resource, as the API runs it for this key (403 without the permission)."""
    resource = BY_PATH[path]
    ctx.principal.require("read", resource.title)
    selection = resource.selection({name: True for name in fields}, ctx.principal)
    conditions = resource.conditions(query) if query else []
    order = resource.order(sort) if sort else resource.order(None)
    return resource.list(ctx, selection, conditions, order, skip, min(limit, MAX_LIST))


def all_rows(ctx, path, fields, query=None, sort=None, limit=MAX_LIST) -> list[dict]:
    return rows(ctx, path, fields, query, sort, limit)[1]


def get(ctx: Context, path: str, item_id: str, fields: Iterable[str]) -> dict:
    resource = BY_PATH[path]
    ctx.principal.require("read", resource.title)
    return resource.get(ctx, item_id, resource.selection({name: True for name in fields}, ctx.principal))


def names(ctx: Context, path: str, ids: Iterable[str | None], field: str = "name") -> dict[str, str]:
    """Names of rows by id, only when the key may read that resource (else empty)."""
    wanted = sorted({i for i in ids if i})
    if not wanted or not can(ctx, path):
        return {}
    found = {}
    for start in range(0, len(wanted), 500):
        for row in all_rows(ctx, path, [field], {"_id": wanted[start:start + 500]}):
            found[row["_id"]] = row.get(field) or row["_id"][:8]
    return found


def iso(moment: dt.datetime) -> str:
    return format_datetime(moment)


# -- calls ---------------------------------------------------------------------------------------

LOG_FIELDS = ["incomingCallPolicyId", "callerPhoneNumber", "routingPhoneNumber", "status", "statusMessage",
              "callDurationInSeconds", "startedAt", "endedAt", "answeredByUserId", "currentEscalationRuleOrder",
              "repeatCount", "createdAt", "voicemailFile"]
ITEM_FIELDS = ["incomingCallLogId", "incomingCallPolicyEscalationRuleId", "escalationRuleOrder", "userId",
               "numberDialed", "status", "statusMessage", "isAnswered", "dialDurationInSeconds", "startedAt",
               "endedAt"]


def _items_of(ctx: Context, log_ids: list[str]) -> dict[str, list[dict]]:
    if not log_ids or not can(ctx, "incoming-call-log-item"):
        return {}
    items = all_rows(ctx, "incoming-call-log-item", ITEM_FIELDS, {"incomingCallLogId": log_ids},
                     {"startedAt": 1, "createdAt": 1})
    grouped: dict[str, list[dict]] = {}
    for item in items:
        grouped.setdefault(item["incomingCallLogId"], []).append(item)
    return grouped


def _decorate(ctx: Context, logs: list[dict], items: dict[str, list[dict]]) -> list[dict]:
    policies = names(ctx, "incoming-call-policy", (log["incomingCallPolicyId"] for log in logs))
    user_ids = [log["answeredByUserId"] for log in logs]
    user_ids += [item["userId"] for group in items.values() for item in group]
    users = names(ctx, "user", user_ids)
    out = []
    for log in logs:
        calls = [{
            "id": item["_id"], "rule": item["escalationRuleOrder"],
            "user": users.get(item["userId"]) or _short(item["userId"]),
            "number": item["numberDialed"], "status": item["status"], "message": item["statusMessage"],
            "answered": item["isAnswered"], "startedAt": item["startedAt"], "endedAt": item["endedAt"],
            "dialSeconds": item["dialDurationInSeconds"],
        } for item in items.get(log["_id"], [])]
        out.append({
            "id": log["_id"], "caller": log["callerPhoneNumber"], "routing": log["routingPhoneNumber"],
            "policyId": log["incomingCallPolicyId"],
            "policy": policies.get(log["incomingCallPolicyId"]) or _short(log["incomingCallPolicyId"]),
            "status": log["status"], "message": log["statusMessage"], "rule": log["currentEscalationRuleOrder"],
            "repeat": log["repeatCount"], "startedAt": log["startedAt"] or log["createdAt"],
            "endedAt": log["endedAt"], "duration": log["callDurationInSeconds"],
            "answeredBy": users.get(log["answeredByUserId"]) or _short(log["answeredByUserId"]),
            "voicemail": bool(log["voicemailFile"]), "legs": calls,
        })
    return out


def _short(value: str | None) -> str | None:
    return f"#{value[:8]}" if value else None


def live(ctx: Context, now: dt.datetime) -> dict:
    """The calls going on, and those that ended in the last minutes (newest first), with their ring attempts."""
    open_logs = all_rows(ctx, "incoming-call-log", LOG_FIELDS, {"status": OPEN_STATUSES}, limit=100)
    recent = all_rows(ctx, "incoming-call-log", LOG_FIELDS,
                      {"endedAt": {"_type": "GreaterThan", "value": iso(now - RECENT)}}, limit=50)
    seen = {log["_id"] for log in open_logs}
    logs = open_logs + [log for log in recent if log["_id"] not in seen]
    logs.sort(key=lambda log: (log["endedAt"] is None, log["startedAt"] or log["createdAt"]), reverse=True)
    calls = _decorate(ctx, logs, _items_of(ctx, [log["_id"] for log in logs]))
    return {"calls": calls, "open": sum(1 for c in calls if c["status"] in OPEN_STATUSES)}


def call_list(ctx: Context, query: dict, skip: int, limit: int) -> tuple[int, list[dict]]:
    count, logs = rows(ctx, "incoming-call-log", LOG_FIELDS, query, {"createdAt": -1}, limit, skip)
    return count, _decorate(ctx, logs, {})


def call_detail(ctx: Context, log_id: str) -> dict:
    log = get(ctx, "incoming-call-log", log_id, LOG_FIELDS + ["callerIdRaw", "callCostInUSDCents",
                                                           "voicemailReceivedAt"])
    call = _decorate(ctx, [log], _items_of(ctx, [log["_id"]]))[0]
    call["cost"] = log["callCostInUSDCents"]
    call["callerIdRaw"] = log["callerIdRaw"]
    events = [(call["startedAt"], 0, "Initiated", f"Call from {call['caller'] or 'an unknown caller'} to "
                                                  f"{call['routing'] or '?'} ({call['policy']})")]
    for item in call["legs"]:
        events.append((item["startedAt"], 1, "Ringing",
                       f"Rule {item['rule']} rings {item['user'] or 'someone'} at {item['number']}"))
        if item["endedAt"]:
            what = "answered and accepted" if item["answered"] else "did not take the call"
            detail = f"{item['user'] or 'someone'} {what}" + (f": {item['message']}" if item["message"] else "")
            events.append((item["endedAt"], 2, item["status"], detail))
    if log["voicemailReceivedAt"]:
        events.append((log["voicemailReceivedAt"], 3, "Voicemail", "The caller left a voicemail"))
    if call["endedAt"]:
        detail = call["message"] or ""
        if call["answeredBy"]:
            detail = f"Answered by {call['answeredBy']}. {detail}".strip()
        events.append((call["endedAt"], 4, call["status"], detail))
    events.sort(key=lambda e: (e[0] or "", e[1]))
    call["timeline"] = [{"at": at, "status": status, "detail": detail} for at, _, status, detail in events]
    call["canItems"] = can(ctx, "incoming-call-log-item")
    return call


# -- policies and rules --------------------------------------------------------------------------

POLICY_FIELDS = ["name", "description", "slug", "routingPhoneNumber", "isEnabled", "greetingMessage",
                 "noAnswerMessage", "requireAnswerConfirmation", "repeatPolicyIfNoOneAnswers",
                 "repeatPolicyIfNoOneAnswersTimes", "createdAt"]
RULE_FIELDS = ["incomingCallPolicyId", "name", "order", "escalateAfterSeconds", "userId", "teamId",
               "onCallDutyPolicyScheduleId"]


def policy_list(ctx: Context) -> list[dict]:
    policies = all_rows(ctx, "incoming-call-policy", POLICY_FIELDS, sort={"name": 1})
    counts: dict[str, int] = {}
    if policies and can(ctx, "incoming-call-policy-escalation-rule"):
        for rule in all_rows(ctx, "incoming-call-policy-escalation-rule", ["incomingCallPolicyId"],
                             {"incomingCallPolicyId": [p["_id"] for p in policies]}):
            counts[rule["incomingCallPolicyId"]] = counts.get(rule["incomingCallPolicyId"], 0) + 1
    for policy in policies:
        policy["rules"] = counts.get(policy["_id"]) if can(ctx, "incoming-call-policy-escalation-rule") else None
    return policies


def targets(ctx: Context) -> dict[str, list[dict]]:
    """What a rule may ring, among what this key may read."""
    out = {}
    for kind, path in (("user", "user"), ("team", "team"), ("schedule", "on-call-duty-policy-schedule")):
        out[kind] = all_rows(ctx, path, ["name"], sort={"name": 1}) if can(ctx, path) else []
    return out


def policy_detail(ctx: Context, policy_id: str) -> dict:
    policy = get(ctx, "incoming-call-policy", policy_id, POLICY_FIELDS)
    rules = None
    if can(ctx, "incoming-call-policy-escalation-rule"):
        rules = all_rows(ctx, "incoming-call-policy-escalation-rule", RULE_FIELDS,
                         {"incomingCallPolicyId": policy["_id"]}, {"order": 1})
        users = names(ctx, "user", (r["userId"] for r in rules))
        teams = names(ctx, "team", (r["teamId"] for r in rules))
        schedules = names(ctx, "on-call-duty-policy-schedule", (r["onCallDutyPolicyScheduleId"] for r in rules))
        for rule in rules:
            if rule["userId"]:
                rule["target"] = ("user", rule["userId"], "User", users.get(rule["userId"]) or _short(rule["userId"]))
            elif rule["teamId"]:
                rule["target"] = ("team", rule["teamId"], "Team", teams.get(rule["teamId"]) or _short(rule["teamId"]))
            elif rule["onCallDutyPolicyScheduleId"]:
                sid = rule["onCallDutyPolicyScheduleId"]
                rule["target"] = ("schedule", sid, "Schedule", schedules.get(sid) or _short(sid))
            else:
                rule["target"] = ("", "", "Nobody", "")
    return {"policy": policy, "rules": rules, "targets": targets(ctx)}


def rule_row(ctx: Context, rule_id: str) -> dict:
    return get(ctx, "incoming-call-policy-escalation-rule", rule_id, RULE_FIELDS)


def rule_users(ctx: Context, rule_id: str, now: dt.datetime) -> tuple[dict, list[tuple[str, str]]]:
    """The rule, and the users it would ring now that have a verified number: (id, name)."""
    from ivr.store.callstore import resolve_rule

    rule = rule_row(ctx, rule_id)
    Rule = m.IncomingCallPolicyEscalationRule
    row = on_reader(Rule.select().where(Rule.id == rule["_id"], Rule.project == ctx.project_id)).get()
    user_ids = list(dict.fromkeys(contact.user_id for contact in resolve_rule(row, now)))
    named = {str(u.id): u.name for u in on_reader(m.User.select(m.User.id, m.User.name).where(
        m.User.id.in_(user_ids), m.User.project == ctx.project_id))} if user_ids else {}
    return rule, [(uid, named.get(uid, uid)) for uid in user_ids]


# -- schedules -----------------------------------------------------------------------------------

def schedule_list(ctx: Context, now: dt.datetime) -> list[dict]:
    from api.actions import Request, on_call

    schedules = all_rows(ctx, "on-call-duty-policy-schedule", ["name", "description", "timeZone"], sort={"name": 1})
    for schedule in schedules:
        schedule["report"] = on_call(ctx, Request({"id": schedule["_id"]}, {"next": "3", "at": iso(now)}, {}))
    return schedules


def schedule_detail(ctx: Context, schedule_id: str, now: dt.datetime) -> dict:
    from api.actions import Request, on_call

    schedule = get(ctx, "on-call-duty-policy-schedule", schedule_id, ["name", "description", "timeZone"])
    report = on_call(ctx, Request({"id": schedule["_id"]}, {"next": "10", "at": iso(now)}, {}))
    layers = overrides = None
    user_ids: list[str] = []
    if can(ctx, "on-call-duty-policy-schedule-layer"):
        layers = all_rows(ctx, "on-call-duty-policy-schedule-layer",
                          ["name", "order", "startsAt", "rotationInterval", "rotationIntervalCount", "handOffTime"],
                          {"onCallDutyPolicyScheduleId": schedule["_id"]}, {"order": 1})
        members = []
        if layers and can(ctx, "on-call-duty-policy-schedule-layer-user"):
            members = all_rows(ctx, "on-call-duty-policy-schedule-layer-user",
                               ["onCallDutyPolicyScheduleLayerId", "userId", "order"],
                               {"onCallDutyPolicyScheduleLayerId": [layer["_id"] for layer in layers]}, {"order": 1})
        for layer in layers:
            layer["users"] = [u["userId"] for u in members if u["onCallDutyPolicyScheduleLayerId"] == layer["_id"]]
            user_ids += layer["users"]
    if can(ctx, "on-call-duty-policy-schedule-override"):
        overrides = all_rows(ctx, "on-call-duty-policy-schedule-override",
                             ["userId", "startsAt", "endsAt", "description"],
                             {"onCallDutyPolicyScheduleId": schedule["_id"]}, {"startsAt": -1}, limit=100)
        user_ids += [o["userId"] for o in overrides]
    users = names(ctx, "user", user_ids)
    for layer in layers or []:
        layer["users"] = [users.get(u) or _short(u) for u in layer["users"]]
    for override in overrides or []:
        override["user"] = users.get(override["userId"]) or _short(override["userId"])
        override["current"] = override["startsAt"] <= iso(now) < override["endsAt"]
    user_options = all_rows(ctx, "user", ["name"], sort={"name": 1}) if can(ctx, "user") else []
    return {"schedule": schedule, "report": report, "layers": layers, "overrides": overrides,
            "users": user_options}


# -- people, menus -------------------------------------------------------------------------------

def people(ctx: Context) -> dict:
    users = all_rows(ctx, "user", ["name", "email", "timeZone", "isAgent"], sort={"name": 1})
    numbers = None
    if can(ctx, "user-incoming-call-number"):
        numbers = all_rows(ctx, "user-incoming-call-number", ["userId", "phoneNumber", "sipUri", "isVerified"],
                           sort={"createdAt": 1})
    for user in users:
        user["numbers"] = [n for n in numbers if n["userId"] == user["_id"]] if numbers is not None else None
    teams = None
    if can(ctx, "team"):
        teams = all_rows(ctx, "team", ["name", "description"], sort={"name": 1})
        members = all_rows(ctx, "team-member", ["teamId", "userId"]) if can(ctx, "team-member") else []
        by_id = {u["_id"]: u["name"] for u in users}
        for team in teams:
            team["members"] = sorted(by_id.get(x["userId"], _short(x["userId"])) for x in members
                                     if x["teamId"] == team["_id"]) if can(ctx, "team-member") else None
    return {"users": users, "teams": teams}


def menus(ctx: Context) -> dict:
    rows_ = all_rows(ctx, "call-menu", ["name", "parentId", "position", "menuType", "routingPhoneNumber", "state",
                                        "incomingCallPolicyId", "offerType", "hidden", "maxWaitSeconds"],
                     sort={"position": 1})
    agents = all_rows(ctx, "call-menu-agent", ["callMenuId", "userId", "groupNumber"],
                      sort={"groupNumber": 1}) if can(ctx, "call-menu-agent") else None
    users = names(ctx, "user", (a["userId"] for a in agents or []))
    policies = names(ctx, "incoming-call-policy", (r["incomingCallPolicyId"] for r in rows_))
    children: dict[str | None, list[dict]] = {}
    ids = {r["_id"] for r in rows_}
    for row in rows_:
        row["agents"] = None if agents is None else [
            {"user": users.get(a["userId"]) or _short(a["userId"]), "group": a["groupNumber"]}
            for a in agents if a["callMenuId"] == row["_id"]]
        row["policy"] = policies.get(row["incomingCallPolicyId"]) or _short(row["incomingCallPolicyId"])
        parent = row["parentId"] if row["parentId"] in ids else None
        children.setdefault(parent, []).append(row)

    def walk(parent, depth, seen):
        out = []
        for row in children.get(parent, []):
            if row["_id"] in seen:
                continue
            seen.add(row["_id"])
            out.append({**row, "depth": min(depth, 8), "key": row["position"] + 1 if parent else None})
            out += walk(row["_id"], depth + 1, seen)
        return out

    return {"menus": walk(None, 0, set())}


# -- charts --------------------------------------------------------------------------------------

def chart_data(ctx: Context, now: dt.datetime, hours: int = 24) -> dict:
    start = (now - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    logs = all_rows(ctx, "incoming-call-log", ["status", "startedAt", "createdAt"],
                    {"createdAt": {"_type": "GreaterThanOrEqual", "value": iso(start)}}, limit=MAX_LIST)
    waits: list[float] = []
    if logs and can(ctx, "incoming-call-log-item"):
        starts = {log["_id"]: log["startedAt"] or log["createdAt"] for log in logs}
        answered = all_rows(ctx, "incoming-call-log-item", ["incomingCallLogId", "startedAt", "dialDurationInSeconds"],
                            {"isAnswered": True, "incomingCallLogId": list(starts)[:MAX_LIST]}, limit=MAX_LIST)
        for item in answered:
            began = starts.get(item["incomingCallLogId"])
            if began and item["startedAt"] and item["dialDurationInSeconds"] is not None:
                wait = (_parse(item["startedAt"]) - _parse(began)).total_seconds() + item["dialDurationInSeconds"]
                waits.append(max(0.0, wait))
    return {"start": start, "hours": hours, "logs": logs, "waits": waits, "capped": len(logs) >= MAX_LIST}


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.rstrip("Z"))
