"""What the call shells read and write in the database.

Plain synchronous peewee functions, run through the asyncio database's bridge
(``await db.run(fn, ...)``): the shells stay thin and these stay testable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Iterable

from ivr.store import models as m
from ivr.store import outbox
from ivr.store.db import Compiled, on_reader, write_transaction
from ivr.core import admission, oncall
from ivr.core.engine import TERMINAL_STATUSES, CallSetup, Contact, Rule, UpdateItem, UpdateLog
from ivr.core.phone import InvalidNumber, normalize_loose, to_e164
from ivr.store.schedules import on_call_user_ids

log = logging.getLogger(__name__)

OPEN_STATUSES = [s.value for s in m.CallStatus if s.value not in {t.value for t in TERMINAL_STATUSES}]


def utc_from_timestamp(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


def timestamp_of(moment: dt.datetime) -> float:
    """The inverse of :func:`utc_from_timestamp` (the database keeps naive UTC)."""
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


Policy = m.IncomingCallPolicy
Rule_ = m.IncomingCallPolicyEscalationRule
Number = m.UserIncomingCallNumber
Member = m.TeamMember

# The reads of a call's set-up, compiled once (see ivr.store.db.Compiled): they sit between the caller's
# INVITE and the first on-call INVITE.
_POLICY_COLUMNS = (Policy.id, Policy.project, Policy.name, Policy.routingPhoneNumber, Policy.greetingMessage,
                   Policy.noAnswerMessage, Policy.noOneAvailableMessage, Policy.isEnabled,
                   Policy.repeatPolicyIfNoOneAnswers, Policy.repeatPolicyIfNoOneAnswersTimes,
                   Policy.requireAnswerConfirmation, Policy.businessHours, Policy.businessHoursTimeZone,
                   Policy.afterHoursMessage, Policy.callerBlockList, Policy.callerAllowList,
                   Policy.blockedCallerMessage, Policy.voicemailOnNoAnswer, Policy.voicemailMaxSeconds)
PolicyRow = namedtuple("PolicyRow", [getattr(c, "object_id_name", c.name) for c in _POLICY_COLUMNS])
_POLICY_BY_NUMBER = Compiled(
    lambda number: Policy.select(*_POLICY_COLUMNS).where(Policy.routingPhoneNumber == number).limit(1),
    Policy.routingPhoneNumber)
_POLICY_BY_ID = Compiled(lambda policy: Policy.select(*_POLICY_COLUMNS).where(Policy.id == policy), Policy.id)

_RULE_COLUMNS = (Rule_.id, Rule_.project, Rule_.order, Rule_.name, Rule_.escalateAfterSeconds, Rule_.user,
                 Rule_.team, Rule_.onCallDutyPolicySchedule)
RuleRow = namedtuple("RuleRow", [getattr(c, "object_id_name", c.name) for c in _RULE_COLUMNS])
_RULES = Compiled(
    lambda policy: Rule_.select(*_RULE_COLUMNS).where(Rule_.incomingCallPolicy == policy).order_by(Rule_.order),
    Rule_.incomingCallPolicy)
_MEMBERS = Compiled(  # (team, user) of the teams the policy's rules ring, in joining order
    lambda policy: (Member.select(Member.team, Member.user)
                    .join(Rule_, on=(Member.team == Rule_.team))
                    .where(Rule_.incomingCallPolicy == policy)
                    .order_by(Member.createdAt, Member.id)),
    Rule_.incomingCallPolicy)
_NUMBERS = Compiled(  # verified numbers of every user the policy's rules ring directly or through a team
    lambda policy, project: (
        Number.select(Number.id, Number.user, Number.phoneNumber, Number.sipUri)
        .where(Number.project == project, Number.isVerified == True,  # noqa: E712
               Number.user.in_(Rule_.select(Rule_.user).where(Rule_.incomingCallPolicy == policy)
                               | Member.select(Member.user).join(Rule_, on=(Member.team == Rule_.team))
                               .where(Rule_.incomingCallPolicy == policy)))
        .order_by(Number.createdAt, Number.id)),
    Rule_.incomingCallPolicy, Number.project)


def find_policy(dialed: str, default_region: str) -> PolicyRow | None:
    """The policy whose routing number is ``dialed`` (any format), or None."""
    try:
        number = to_e164(dialed, default_region)
    except InvalidNumber:
        return None
    rows = _POLICY_BY_NUMBER.rows(number)
    return PolicyRow(*rows[0]) if rows else None


def contacts_for_users(user_ids: Iterable, project_id) -> list[Contact]:
    """The verified numbers of these users, in the users' order then the numbers' creation order."""
    user_ids = list(dict.fromkeys(user_ids))
    if not user_ids:
        return []
    Number = m.UserIncomingCallNumber
    rows = on_reader(Number.select(Number.id, Number.user, Number.phoneNumber, Number.sipUri)
                     .where(Number.user.in_(user_ids), Number.project == project_id,
                            Number.isVerified == True)  # noqa: E712
                     .order_by(Number.createdAt, Number.id).tuples())
    by_user: dict[Any, list[Contact]] = {}
    for number_id, user_id, phone, sip in rows:
        by_user.setdefault(user_id, []).append(Contact(str(user_id), str(number_id), phone or sip))
    return [contact for user_id in user_ids for contact in by_user.get(user_id, [])]


def on_call_contacts(rule: RuleRow, at: dt.datetime) -> list[Contact]:
    """Whoever is on call on the rule's schedule at ``at`` (naive UTC), by their verified numbers."""
    try:
        on_call = on_call_user_ids(rule.onCallDutyPolicyScheduleId, rule.projectId, at)
    except ValueError as exc:  # a schedule the API would not have accepted (edited by hand)
        log.error("escalation rule %s (order %s): on-call schedule %s cannot be read (%s): the rule is skipped",
                  rule.id, rule.order, rule.onCallDutyPolicyScheduleId, exc)
        return []
    if not on_call:
        log.info("escalation rule %s (order %s): no one is on call on schedule %s at %s",
                 rule.id, rule.order, rule.onCallDutyPolicyScheduleId, at)
    return contacts_for_users(on_call, rule.projectId)


def resolve_rules(policy: PolicyRow, at: dt.datetime) -> list[Rule]:
    """Each rule of the policy with who it rings at ``at``: a user, all members of a team at once, or
    whoever is on call on its schedule; only verified numbers."""
    rules = [RuleRow(*row) for row in _RULES.rows(policy.id)]
    numbers: dict[Any, list[Contact]] = {}
    members: dict[Any, list] = {}
    if any(r.userId is not None or r.teamId is not None for r in rules):
        for number_id, user_id, phone, sip in _NUMBERS.rows(policy.id, policy.projectId):
            numbers.setdefault(user_id, []).append(Contact(str(user_id), str(number_id), phone or sip))
        for team_id, user_id in _MEMBERS.rows(policy.id):
            members.setdefault(team_id, []).append(user_id)
    resolved = []
    for rule in rules:
        if rule.userId is not None:
            contacts = numbers.get(rule.userId, [])
        elif rule.teamId is not None:
            users = dict.fromkeys(members.get(rule.teamId, []))
            contacts = [contact for user_id in users for contact in numbers.get(user_id, [])]
        elif rule.onCallDutyPolicyScheduleId is not None:
            contacts = on_call_contacts(rule, at)
        else:
            contacts = []
        resolved.append(Rule(order=rule.order, rule_id=str(rule.id), name=rule.name or f"Rule {rule.order}",
                             escalate_after_seconds=float(rule.escalateAfterSeconds), contacts=tuple(contacts)))
    return resolved


def resolve_rule(rule: m.IncomingCallPolicyEscalationRule, at: dt.datetime) -> list[Contact]:
    """Who one rule rings at ``at`` (as ``resolve_rules`` decides it)."""
    policy = PolicyRow(*_POLICY_BY_ID.rows(rule.incomingCallPolicyId)[0])
    return next(list(r.contacts) for r in resolve_rules(policy, at) if r.rule_id == str(rule.id))


def business_hours(policy: PolicyRow) -> tuple[tuple[oncall.Window, ...], str]:
    """The policy's business hours and their zone. A value the API would not have accepted (edited by
    hand) is logged and read as no business hours: calls are still taken."""
    try:
        zone = policy.businessHoursTimeZone or "UTC"
        oncall.time_zone(zone)
        return oncall.parse_restrictions(_json(policy.businessHours)), zone
    except ValueError as exc:
        log.error("Incoming Call Policy %s: its business hours cannot be read (%s): calls are taken at any hour",
                  policy.id, exc)
        return (), "UTC"


def caller_list(policy: PolicyRow, name: str) -> tuple[str, ...]:
    """One of the policy's caller lists; entries the API would not have accepted are logged and left out."""
    entries = _json(getattr(policy, name))
    if not isinstance(entries, list):
        log.error("Incoming Call Policy %s: %s is not a list: it is ignored", policy.id, name)
        return ()
    bad = [entry for entry in entries if not admission.is_entry(entry)]
    if bad:
        log.error("Incoming Call Policy %s: %s entries %r are neither E.164 numbers nor prefixes like +1415*: "
                  "they are ignored", policy.id, name, bad[:5])
    return tuple(entry for entry in entries if admission.is_entry(entry))


def _json(value: Any) -> Any:
    """A JSON column as selected (a compiled query hands back its text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"not JSON: {value[:40]!r}") from None
    return value or []


def caller_e164(caller: str | None, default_region: str) -> str | None:
    """The caller's number in E.164, or None (anonymous, empty, not a phone number)."""
    try:
        return to_e164(caller, default_region) if caller else None
    except InvalidNumber:
        return None


def build_setup(policy: PolicyRow, call_id: str, caller: str, confirm_timeout: float,
                resume_from_order: int | None = None, resume_repeat_count: int = 0,
                caller_number_e164: str | None = None, admitted: bool = False) -> CallSetup:
    hours, zone = business_hours(policy)
    return CallSetup(
        call_id=call_id,
        policy_name=policy.name,
        caller_number=caller,
        greeting=policy.greetingMessage or "",
        no_answer_message=policy.noAnswerMessage or "",
        no_one_available_message=policy.noOneAvailableMessage or "",
        is_enabled=policy.isEnabled,
        repeat_if_no_one_answers=policy.repeatPolicyIfNoOneAnswers,
        repeat_times=max(0, policy.repeatPolicyIfNoOneAnswersTimes or 0),
        require_confirmation=policy.requireAnswerConfirmation,
        confirm_timeout=confirm_timeout,
        rules=tuple(resolve_rules(policy, m.utcnow())),
        resume_from_order=resume_from_order,
        resume_repeat_count=resume_repeat_count,
        admitted=admitted,
        caller_e164=caller_number_e164,
        caller_block_list=caller_list(policy, "callerBlockList"),
        caller_allow_list=caller_list(policy, "callerAllowList"),
        blocked_caller_message=policy.blockedCallerMessage or "",
        business_hours=hours,
        business_hours_time_zone=zone,
        after_hours_message=policy.afterHoursMessage or "",
        voicemail_on_no_answer=bool(policy.voicemailOnNoAnswer),
        # A value the API would not have accepted (edited by hand) is brought into its range.
        voicemail_max_seconds=float(min(600, max(5, policy.voicemailMaxSeconds or 120))),
    )


@dataclass(frozen=True)
class PreparedCall:
    """What a call needs before it can ring anyone: read in one go, written nothing yet."""

    log_id: uuid.UUID
    policy_id: uuid.UUID
    project_id: uuid.UUID
    routing_number: str | None
    caller_number: str | None
    setup: CallSetup
    caller_raw: str | None = None


#: callerPhoneNumber keeps this many characters; the raw caller ID (capped) goes to callerIdRaw.
CALLER_COLUMN = m.IncomingCallLog.callerPhoneNumber.max_length
RAW_CALLER_LIMIT = 1024


def caller_id(raw: str, default_region: str) -> tuple[str | None, str | None]:
    """(callerPhoneNumber, callerIdRaw) of a caller ID as the network sent it: E.164 when it is a
    number; otherwise its printable characters, cut to the column. The raw value is kept beside it
    (capped, control characters escaped: PostgreSQL refuses a NUL) whenever the column could not hold
    it all. No caller input can keep a call from being logged (it is still rung)."""
    if not raw:
        return None, None
    number = normalize_loose(raw, default_region)
    shown = "".join(ch for ch in number if ch.isprintable()).strip()[:CALLER_COLUMN] or None
    if shown == number and len(raw) <= CALLER_COLUMN:
        return shown, None
    escaped = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in raw[:RAW_CALLER_LIMIT])
    return shown, escaped


def prepare_call(dialed: str, caller: str, default_region: str, confirm_timeout: float,
                 policy_id: str | None = None, log_id: uuid.UUID | None = None) -> PreparedCall | None:
    """The policy of ``dialed`` (or ``policy_id``: a contact-center menu hands a call to its policy) and
    the engine's setup; None for a number no policy routes (reads only)."""
    if policy_id is not None:
        rows = _POLICY_BY_ID.rows(uuid.UUID(str(policy_id)))
        policy = PolicyRow(*rows[0]) if rows else None
    else:
        policy = find_policy(dialed, default_region)
    if policy is None:
        return None
    log_id = log_id or uuid.uuid4()
    caller_number, caller_raw = caller_id(caller, default_region)
    setup = build_setup(policy, str(log_id), caller_number or admission.UNKNOWN_CALLER, confirm_timeout,
                        caller_number_e164=caller_e164(caller, default_region))
    return PreparedCall(log_id, policy.id, policy.projectId, policy.routingPhoneNumber, caller_number, setup,
                        caller_raw)


# Compiled once like the call's other writes (peewee fills the columns' constant defaults in).
_LOG_INSERT_COLUMNS = ("id", "createdAt", "updatedAt", "project", "incomingCallPolicyId", "callerPhoneNumber",
                       "callerIdRaw", "routingPhoneNumber", "callProviderCallId", "status", "startedAt")
_INSERT_LOG = Compiled(
    lambda *slots: m.IncomingCallLog.insert(dict(zip(
        [m.IncomingCallLog._meta.fields[c] for c in _LOG_INSERT_COLUMNS], slots))),
    *[m.IncomingCallLog._meta.fields[c] for c in _LOG_INSERT_COLUMNS])


def open_log(call: PreparedCall, channel_id: str, started_at: float) -> None:
    """The call's IncomingCallLog row (status Initiated)."""
    now = m.utcnow()
    _INSERT_LOG.execute(call.log_id, now, now, call.project_id, call.policy_id, call.caller_number, call.caller_raw,
                        call.routing_number, channel_id, m.CallStatus.INITIATED.value, utc_from_timestamp(started_at))


# How the engine's typed log updates map to columns. Resolved at import: a renamed column fails
# every test at once instead of a call's log write failing at run time.
LOG_COLUMNS = {"status": "status", "status_message": "statusMessage", "answered_by_user_id": "answeredByUserId",
               "current_rule_order": "currentEscalationRuleOrder", "repeat_count": "repeatCount",
               "ended_at": "endedAt", "talk_seconds": "callDurationInSeconds"}
ITEM_COLUMNS = {"status": "status", "status_message": "statusMessage", "is_answered": "isAnswered",
                "dial_seconds": "dialDurationInSeconds", "started_at": "startedAt", "ended_at": "endedAt"}
_LOG_FIELDS = {name: m.IncomingCallLog._meta.fields[column] for name, column in LOG_COLUMNS.items()}
_ITEM_FIELDS = {name: m.IncomingCallLogItem._meta.fields[column] for name, column in ITEM_COLUMNS.items()}


def _db_value(name: str, value: Any) -> Any:
    if name in ("ended_at", "started_at"):
        return utc_from_timestamp(value)
    if name == "talk_seconds":
        return int(round(value))
    return value.value if hasattr(value, "value") else value  # enums


# A call writes a dozen times (the log, each ring attempt); like its reads, those statements are
# compiled once per set of columns (ivr.store.db.Compiled).
_UPDATES: dict[tuple, Compiled] = {}


def _update(model, keys: tuple, key_values: tuple, columns: dict[str, Any], changes: dict[str, Any]) -> None:
    names = tuple(changes)
    compiled = _UPDATES.get((model, keys, names))
    if compiled is None:
        fields_ = [columns[name] for name in names] + [model.updatedAt]

        def build(*slots):
            return model.update(dict(zip(fields_, slots))).where(
                *[key == slot for key, slot in zip(keys, slots[len(fields_):])])

        compiled = _UPDATES[(model, keys, names)] = Compiled(build, *fields_, *keys)
    values = [_db_value(name, value) for name, value in changes.items()]
    compiled.execute(*values, m.utcnow(), *key_values)


def update_log(log_id, update: UpdateLog) -> None:
    Log = m.IncomingCallLog
    _update(Log, (Log.id,), (log_id,), _LOG_FIELDS, update.changes())


_ITEM_COLUMNS = ("id", "createdAt", "updatedAt", "project", "incomingCallLog", "incomingCallPolicyEscalationRuleId",
                 "escalationRuleOrder", "userId", "userIncomingCallNumberId", "numberDialed", "callProviderCallId",
                 "status", "startedAt")
_INSERT_ITEM = Compiled(
    lambda *slots: m.IncomingCallLogItem.insert(dict(zip(
        [m.IncomingCallLogItem._meta.fields[c] for c in _ITEM_COLUMNS], slots))),
    *[m.IncomingCallLogItem._meta.fields[c] for c in _ITEM_COLUMNS])


def create_item(log_id, project_id, leg_id: str, contact: Contact, rule_id: str, rule_order: int,
                started_at: float) -> None:
    now = m.utcnow()
    _INSERT_ITEM.execute(uuid.uuid4(), now, now, project_id, log_id, uuid.UUID(rule_id), rule_order,
                         uuid.UUID(contact.user_id), uuid.UUID(contact.number_id), contact.address, leg_id,
                         m.CallStatus.RINGING.value, utc_from_timestamp(started_at))


def update_item(log_id, update: UpdateItem) -> None:
    Item = m.IncomingCallLogItem
    _update(Item, (Item.incomingCallLog, Item.callProviderCallId), (log_id, update.leg_id), _ITEM_FIELDS,
            update.changes())


#: ``callProviderCallId`` prefix of the calls the FastAGI shell runs (ivr/shells/fastagi.py). Their
#: session lives and dies with the process serving FastAGI: the ARI controller must neither
#: resume nor close them.
AGI_CALL_PREFIX = "agi:"
#: ``callProviderCallId`` prefix of the calls the Twilio shell runs (``twilio:<CallSid>``): not the ARI
#: controller's either.
TWILIO_CALL_PREFIX = "twilio:"


def _ari_owned():
    Log = m.IncomingCallLog
    return (Log.callProviderCallId.is_null(True)
            | ~(Log.callProviderCallId.startswith(AGI_CALL_PREFIX)
                | Log.callProviderCallId.startswith(TWILIO_CALL_PREFIX)))


def open_logs(channel_prefix: str = "") -> list[m.IncomingCallLog]:
    """The open logs of the calls the ARI controller runs (reconciled at every ARI connection).
    ``channel_prefix``: only calls of the Asterisk whose channel ids start so (its ``systemname``):
    controllers of other Asterisks may share the database."""
    Log = m.IncomingCallLog
    where = [Log.status.in_(OPEN_STATUSES), _ari_owned()]
    if channel_prefix:
        where.append(Log.callProviderCallId.startswith(channel_prefix))
    return list(Log.select().where(*where))


def logged_channels(channel_ids: list[str]) -> set[str]:
    """Which of these caller channels have a log (of any status)."""
    Log = m.IncomingCallLog
    return {cid for (cid,) in Log.select(Log.callProviderCallId).where(Log.callProviderCallId.in_(channel_ids)).tuples()}


def open_agi_logs(channel_prefix: str = "") -> list[m.IncomingCallLog]:
    """The open logs of FastAGI calls (a FastAGI server starting closes those it does not run),
    of the Asterisk whose channel ids start with ``channel_prefix``."""
    Log = m.IncomingCallLog
    return list(Log.select().where(Log.status.in_(OPEN_STATUSES),
                                   Log.callProviderCallId.startswith(AGI_CALL_PREFIX + channel_prefix)))


def close_lost_call(log_id, message: str, ended_at: float) -> None:
    """Close a log (and its open items) whose call no longer exists in Asterisk."""
    Item = m.IncomingCallLogItem
    ended = utc_from_timestamp(ended_at)
    Item.update(status=m.CallStatus.FAILED.value, statusMessage=message, endedAt=ended, updatedAt=m.utcnow()).where(
        Item.incomingCallLog == log_id, Item.status.in_(OPEN_STATUSES)).execute()
    row = m.IncomingCallLog.get_by_id(log_id)
    duration = 0
    if row.status == m.CallStatus.CONNECTED.value:
        # Talk time: from the connection (the log's last write before it was lost), not the greeting.
        connected = row.updatedAt or row.startedAt
        duration = max(0, int((ended - connected).total_seconds())) if connected else 0
    # Only if still open: the call may have ended, and its log been closed truthfully, since the caller looked.
    m.IncomingCallLog.update(status=m.CallStatus.FAILED.value, statusMessage=message, endedAt=ended,
                             callDurationInSeconds=duration, updatedAt=m.utcnow()).where(
        m.IncomingCallLog.id == log_id, m.IncomingCallLog.status.in_(OPEN_STATUSES)).execute()


def close_lost_provider_call(provider_call_id: str, message: str, ended_at: float) -> bool:
    """Close the open log of the call the provider names so (a Twilio call whose process restarted);
    False if there is none (the call ended truthfully, or was never logged)."""
    Log = m.IncomingCallLog
    row = Log.select(Log.id).where(Log.callProviderCallId == provider_call_id, Log.status.in_(OPEN_STATUSES)).first()
    if row is None:
        return False
    close_lost_call(row.id, message, ended_at)
    return True


def set_costs(log_id, incoming_cents: int, leg_cents: dict[str, int]) -> None:
    """What the provider charged: the caller's call, and each leg (by its leg id); the log's total is
    their sum."""
    Item = m.IncomingCallLogItem
    for leg_id, cents in leg_cents.items():
        Item.update(callCostInUSDCents=cents, updatedAt=m.utcnow()).where(
            Item.incomingCallLog == log_id, Item.callProviderCallId == leg_id).execute()
    outgoing = sum(leg_cents.values())
    m.IncomingCallLog.update(incomingCallCostInUSDCents=incoming_cents, outgoingCallCostInUSDCents=outgoing,
                             callCostInUSDCents=incoming_cents + outgoing, updatedAt=m.utcnow()).where(
        m.IncomingCallLog.id == log_id).execute()


def close_open_items(log_id, message: str, ended_at: float, keep: str | None = None) -> list[str]:
    """Close the open items of a resumed call (their legs were lost), but the leg ``keep`` (the
    conversation being taken over); returns the closed items' leg ids."""
    Item = m.IncomingCallLogItem
    where = [Item.incomingCallLog == log_id, Item.status.in_(OPEN_STATUSES)]
    if keep is not None:
        where.append(Item.callProviderCallId != keep)
    legs = [leg for (leg,) in Item.select(Item.callProviderCallId).where(*where).tuples()]
    Item.update(status=m.CallStatus.FAILED.value, statusMessage=message, endedAt=utc_from_timestamp(ended_at),
                updatedAt=m.utcnow()).where(*where).execute()
    return legs


@dataclass(frozen=True)
class ConnectedLeg:
    """The leg a Connected call is bridged with, as its log tells it."""

    leg_id: str
    contact: Contact
    rule_order: int
    dialed_at: float
    connected_at: float


def connected_leg(log_row: m.IncomingCallLog) -> ConnectedLeg | None:
    Item = m.IncomingCallLogItem
    item = (Item.select().where(Item.incomingCallLog == log_row.id, Item.status == m.CallStatus.CONNECTED.value)
            .order_by(Item.startedAt.desc()).first())
    if item is None or not item.callProviderCallId:
        return None
    contact = Contact(str(item.userId or ""), str(item.userIncomingCallNumberId or ""), item.numberDialed or "")
    dialed_at = timestamp_of(item.startedAt) if item.startedAt else 0.0
    # The log's last write before the restart was the one that said Connected.
    connected_at = timestamp_of(log_row.updatedAt) if log_row.updatedAt else dialed_at
    return ConnectedLeg(item.callProviderCallId, contact, item.escalationRuleOrder or 0, dialed_at, connected_at)


def resume_setup(log_row: m.IncomingCallLog, call_id: str, confirm_timeout: float) -> CallSetup | None:
    rows = _POLICY_BY_ID.rows(log_row.incomingCallPolicyId)
    if not rows:
        return None
    policy = PolicyRow(*rows[0])
    # A call that never rang anyone (still Initiated: it was greeted, or told it is refused) is
    # screened again; one that rang someone was taken and goes on.
    return build_setup(policy, call_id, log_row.callerPhoneNumber or admission.UNKNOWN_CALLER, confirm_timeout,
                       resume_from_order=log_row.currentEscalationRuleOrder or 1,
                       resume_repeat_count=log_row.repeatCount or 0,
                       caller_number_e164=caller_e164(log_row.callerPhoneNumber, "ZZ"),
                       admitted=log_row.status != m.CallStatus.INITIATED.value)


VOICEMAIL_EVENT = "incoming-call-log.voicemail"


def voicemail_url(log_id) -> str:
    return f"/api/incoming-call-log/{log_id}/voicemail"


def save_voicemail(log_id, file_name: str, alert: bool) -> None:
    """The voicemail a caller left after no one answered: its file (a name under the recordings
    directory) and, when a webhook is configured (``alert``), its signed alert, in one transaction: a
    voicemail is never announced before it is kept, nor kept without its alert."""
    Log = m.IncomingCallLog
    now = m.utcnow()
    with write_transaction():
        Log.update(voicemailFile=file_name, voicemailReceivedAt=now, updatedAt=now).where(Log.id == log_id).execute()
        row = Log.get_or_none(Log.id == log_id)
        if not alert or row is None:
            return
        policy = Policy.select(Policy.name).where(Policy.id == row.incomingCallPolicyId).first()
        outbox.put(outbox.WEBHOOK, {
            "event": VOICEMAIL_EVENT, "incomingCallLogId": str(row.id), "projectId": str(row.projectId),
            "incomingCallPolicyId": str(row.incomingCallPolicyId), "policy": policy.name if policy else None,
            "callerPhoneNumber": row.callerPhoneNumber, "voicemailUrl": voicemail_url(row.id),
            "receivedAt": now.isoformat(timespec="milliseconds") + "Z"})


def voicemail_not_kept(log_id, problem: str) -> None:
    """The caller left a voicemail but it could not be kept: the log's statusMessage says so."""
    Log = m.IncomingCallLog
    row = Log.select(Log.statusMessage).where(Log.id == log_id).first()
    if row is not None:
        Log.update(statusMessage=f"{row.statusMessage or ''}, but it could not be kept: {problem}",
                   updatedAt=m.utcnow()).where(Log.id == log_id).execute()


def voicemail_file(project_id, log_id) -> str | None:
    """The voicemail file of a log of the project (None: no such log, or no voicemail)."""
    Log = m.IncomingCallLog
    rows = list(on_reader(Log.select(Log.voicemailFile).where(Log.id == log_id, Log.project == project_id)
                          .limit(1).tuples()))
    return rows[0][0] if rows else None
