"""Configuration as code: ``hotline sync FILE.yaml [--dry-run]``.

One YAML file describes one project's users (by email; with ``agent:`` their contact-center agent
fields) and their numbers, teams, on-call schedules (layers, overrides), Incoming Call Policies (by
slug or name) with their escalation rules (targets by user email, team name or schedule name), the
contact center's ``outboundNumbers`` and its ``menus`` (a tree: queues of agents by email, leaves
handing calls to a policy by slug or name). ``sync`` makes the project match the file, through the
same resources, domain rules and validation as the API, in one transaction: it is applied whole or
not at all, and applying it twice changes nothing the second time. ``--dry-run`` does the same work
and rolls it back, printing the differences.

What the file says is the truth for what it names, and only that:

- objects are matched by their key (user email, team name, schedule name, policy slug or name) and
  created or updated; objects of the project the file does not name are left alone (sync never
  deletes a user, team, schedule or policy);
- a key that is absent leaves that part alone; a list that is present is the whole list: a user's
  ``numbers``, a team's ``members``, a schedule's ``layers`` (by position) and ``overrides``, a layer's
  ``users`` (in rotation order), a policy's ``rules`` (by position), the ``outboundNumbers`` (by number,
  at most one ``default: true``), a menu's ``queue`` and ``children`` (by name, positioned by their order;
  an unlisted child is deleted with everything below it) are made to match exactly. Root ``menus`` the
  file does not name are left alone.

Scalars are read as YAML 1.2's core schema (``true``/``false``, ``null``, decimal integers; everything
else is text), so ``17:00`` is a time, not the number 1020 as YAML 1.1 reads it, and dates are text.
Errors name the file, the line and what is wrong; all of them are reported, and nothing is applied.
See docs/oncall.md for the file format, docs/contact-center-configuration.md for its contact-center part.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from api.auth import Principal
from api.domain import VOICEMAIL_MAX_SECONDS, VOICEMAIL_MIN_SECONDS, slugify
from api.errors import ApiError
from api.registry import BY_PATH
from api.resources import Context, Resource
from api.schema import MAX_LONG_TEXT, render_value
from ivr.config import setting_default
from ivr.core.contact_center import vocabulary as cc
from ivr.store import models as m
from ivr.core import admission, oncall
from ivr.store import verification
from ivr.store.db import write_transaction
from ivr.core.phone import InvalidNumber, to_e164, validate_sip_uri

# -- YAML with line numbers ---------------------------------------------------------------------


class YMap(dict):
    """A mapping from the file, with the line of each key."""

    line: int = 0
    lines: dict

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


class YSeq(list):
    """A sequence from the file, with the line of each item."""

    line: int = 0
    lines: list

    def line_of(self, index: int) -> int:
        return self.lines[index] if index < len(self.lines) else self.line


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core scalars: null, true/false, decimal integers; the rest is text."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                              ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> YMap:
    loader.flatten_mapping(node)
    out = YMap()
    out.line, out.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, bool)) or key is None:
            raise _DuplicateKey(None, None, "a key must be a plain word", key_node.start_mark)
        if key in out:
            raise _DuplicateKey(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> YSeq:
    out = YSeq(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)


# -- problems and changes ---------------------------------------------------------------------------


class SyncError(Exception):
    """The file cannot be applied; ``problems`` are ``FILE:LINE: what is wrong`` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Skip(Exception):
    """This object has a problem (already recorded): go on with the next one."""


def load(text: str, path: str) -> YMap:
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SyncError([f"{path}:{line}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise SyncError([f"{path}: invalid YAML: {exc}"]) from None
    if document is None:
        document = YMap()
        document.line, document.lines = 1, {}
    if not isinstance(document, YMap):
        raise SyncError([f"{path}:1: the file must be a mapping (project:, users:, teams:, schedules:, policies:, "
                         "outboundNumbers:, menus:)"])
    return document


@dataclass
class Result:
    project_id: uuid.UUID | None
    changes: list[str] = field(default_factory=list)
    applied: bool = False


MISSING = object()


def _fmt(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return render_value(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return repr(value)


# -- the work -------------------------------------------------------------------------------------------


class Sync:
    """Reads the document and applies it (inside the caller's transaction)."""

    def __init__(self, document: YMap, path: str, default_region: str, allowed_sip_hosts: tuple[str, ...],
                 codes_per_day: int = verification.CODES_PER_DAY):
        self.doc = document
        self.path = path
        self.region = default_region
        self.allowed_sip_hosts = allowed_sip_hosts
        self.codes_per_day = codes_per_day
        self.problems: list[str] = []
        self.changes: list[str] = []
        self.ctx: Context | None = None
        self.users: dict[str, uuid.UUID] = {}      # email -> id
        self.teams: dict[str, uuid.UUID] = {}      # name -> id (named by the file)
        self.schedules: dict[str, uuid.UUID] = {}  # name -> id (named by the file)

    # -- reporting

    def problem(self, line: int, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {message}")

    def fail(self, line: int, message: str):
        self.problem(line, message)
        raise _Skip

    def change(self, text: str) -> None:
        self.changes.append(text)

    # -- reading values

    def mapping(self, value: Any, line: int, what: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> YMap:
        if not isinstance(value, YMap):
            self.fail(line, f"{what} must be a mapping of {', '.join(allowed)}")
        unknown = [key for key in value if key not in allowed]
        if unknown:
            self.fail(value.line_of(unknown[0]), f"{what}: unknown key {unknown[0]!r} (keys: {', '.join(allowed)})")
        for key in required:
            if value.get(key) is None:
                self.fail(value.line, f"{what}: missing {key}")
        return value

    def sequence(self, parent: YMap, key: str, what: str) -> YSeq | None:
        value = parent.get(key, MISSING)
        if value is MISSING:
            return None
        if value is None:
            value = YSeq()
            value.line, value.lines = parent.line_of(key), []
        if not isinstance(value, YSeq):
            self.fail(parent.line_of(key), f"{what}: {key} must be a list")
        return value

    def text(self, parent: YMap, key: str, what: str, *, max_length: int = 200, nullable: bool = True) -> Any:
        value = parent.get(key, MISSING)
        if value is MISSING or (value is None and nullable):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(parent.line_of(key), f"{what}: {key} must be text")
        value = str(value)
        if not value.strip():
            self.fail(parent.line_of(key), f"{what}: {key} must not be empty")
        if len(value) > max_length:
            self.fail(parent.line_of(key), f"{what}: {key} is longer than {max_length} characters")
        return value

    def integer(self, parent: YMap, key: str, what: str, low: int, high: int) -> Any:
        value = parent.get(key, MISSING)
        if value is MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(parent.line_of(key), f"{what}: {key} must be a whole number from {low} to {high}")
        return value

    def boolean(self, parent: YMap, key: str, what: str) -> Any:
        value = parent.get(key, MISSING)
        if value is not MISSING and not isinstance(value, bool):
            self.fail(parent.line_of(key), f"{what}: {key} must be true or false")
        return value

    def zone(self, parent: YMap, key: str, what: str) -> Any:
        value = self.text(parent, key, what, max_length=64, nullable=False)
        if value is not MISSING:
            try:
                oncall.time_zone(value)
            except ValueError as exc:
                self.fail(parent.line_of(key), f"{what}: {key}: {exc}")
        return value

    def instant(self, parent: YMap, key: str, what: str, tz_name: str) -> dt.datetime:
        """A date-time: with an offset (or Z) an instant; without, a local time of ``tz_name``."""
        value = parent.get(key)
        line = parent.line_of(key)
        if not isinstance(value, str):
            self.fail(line, f"{what}: {key} must be a date-time like 2024-03-04T09:00 (local to the schedule) "
                            "or 2024-03-04T09:00:00Z")
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(line, f"{what}: {key}: {value!r} is not an ISO 8601 date-time like 2024-03-04T09:00")
        if not oncall.in_range(parsed.replace(tzinfo=parsed.tzinfo or dt.timezone.utc)):
            self.fail(line, f"{what}: {key} must be between {oncall.EARLIEST.year} and {oncall.LATEST.year}")
        if parsed.tzinfo is None:
            parsed = oncall.local_to_instant(parsed, oncall.time_zone(tz_name))
        return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)

    # -- references

    def user_ref(self, value: Any, line: int, what: str) -> uuid.UUID:
        if not isinstance(value, str):
            self.fail(line, f"{what}: a user is named by email")
        user_id = self.users.get(value.strip().lower())
        if user_id is None:
            self.fail(line, f"{what}: no user with email {value!r} (neither in this file nor in the project)")
        return user_id

    def named_ref(self, kind: str, value: Any, line: int, what: str, known: dict[str, uuid.UUID],
                  model: type[m.BaseModel]) -> uuid.UUID:
        if not isinstance(value, str):
            self.fail(line, f"{what}: a {kind} is named by its name")
        if value in known:
            return known[value]
        found = [row_id for (row_id,) in model.select(model.id).where(
            model.project == self.ctx.project_id, model.name == value).tuples()]
        if len(found) > 1:
            self.fail(line, f"{what}: several {kind}s are named {value!r} in the project: rename them")
        if not found:
            self.fail(line, f"{what}: no {kind} named {value!r} (neither in this file nor in the project)")
        return found[0]

    # -- writing through the API's resources

    def _call(self, line: int, fn: Callable, *args):
        try:
            return fn(*args)
        except ApiError as exc:
            self.fail(line, exc.message)

    def create(self, path: str, data: dict, line: int) -> uuid.UUID:
        resource = BY_PATH[path]
        created = self._call(line, resource.create, self.ctx, _api(data))
        return uuid.UUID(created["_id"])

    def update(self, path: str, row_id, data: dict, line: int) -> None:
        if data:
            self._call(line, BY_PATH[path].update, self.ctx, str(row_id), _api(data))

    def delete(self, path: str, row_id, line: int) -> None:
        self._call(line, BY_PATH[path].delete, self.ctx, str(row_id))

    def differences(self, path: str, row: m.BaseModel, desired: dict) -> dict:
        """The fields of ``desired`` whose value differs from ``row``'s."""
        resource = BY_PATH[path]
        out = {}
        for name, value in desired.items():
            if value is MISSING:
                continue
            if current(resource, row, name) != value:
                out[name] = value
        return out

    def describe(self, path: str, row: m.BaseModel, changed: dict) -> str:
        resource = BY_PATH[path]
        return ", ".join(f"{name} {_fmt(current(resource, row, name))} -> {_fmt(value)}"
                         for name, value in changed.items())

    def each(self, items: YSeq, fn: Callable[[Any, int], None]) -> None:
        for index, item in enumerate(items):
            try:
                fn(item, items.line_of(index))
            except _Skip:
                pass

    # -- the document

    def run(self, project_override: str | None = None) -> uuid.UUID | None:
        top = ("project", "users", "teams", "schedules", "policies", "outboundNumbers", "menus")
        unknown = [key for key in self.doc if key not in top]
        for key in unknown:
            self.problem(self.doc.line_of(key), f"unknown key {key!r} (keys: {', '.join(top)})")
        try:
            project_id = self.project(project_override)
        except _Skip:
            return None
        self.ctx = Context(Principal(uuid.UUID(int=0), project_id, m.Role.OWNER, frozenset(), None), self.region,
                           self.allowed_sip_hosts, self.codes_per_day)
        User = m.User
        self.users = {email: user_id for email, user_id in User.select(User.email, User.id).where(
            User.project == project_id, User.email.is_null(False)).tuples()}
        for key, section in (("users", self.user), ("teams", self.team), ("schedules", self.schedule),
                             ("policies", self.policy)):
            try:
                items = self.sequence(self.doc, key, "the file")
            except _Skip:
                continue
            if items is not None:
                self.each(items, section)
        # The contact center, after the users (agents) and policies (a menu's target) it names.
        N = m.OutboundPhoneNumber
        self.outbound = {number: row_id for number, row_id in N.select(N.phoneNumber, N.id).where(
            N.project == project_id).tuples()}
        for key, section in (("outboundNumbers", self.outbound_numbers), ("menus", self.menus)):
            try:
                items = self.sequence(self.doc, key, "the file")
                if items is not None:
                    section(items)
            except _Skip:
                continue
        return project_id

    def project(self, override: str | None) -> uuid.UUID:
        given = override if override is not None else self.text(self.doc, "project", "the file")
        line = self.doc.line_of("project")
        if given in (None, MISSING):
            self.fail(self.doc.line, "the project is missing: add `project: NAME or ID` (or give --project)")
        try:
            project_id = uuid.UUID(given)
        except ValueError:
            found = [pid for (pid,) in m.Project.select(m.Project.id).where(m.Project.name == given).tuples()]
            if len(found) > 1:
                self.fail(line, f"several projects are named {given!r}: name it by its id")
            if found:
                return found[0]
            self.change(f"+ project {given}")
            return m.Project.create(name=given).id
        if m.Project.get_or_none(m.Project.id == project_id) is None:
            self.fail(line, f"no project with id {project_id}")
        return project_id

    # -- users and their numbers

    def user(self, item: Any, line: int) -> None:
        what = "user"
        spec = self.mapping(item, line, what, ("email", "name", "timeZone", "agent", "numbers"), ("email",))
        email = self.text(spec, "email", what, max_length=254, nullable=False).strip().lower()
        what = f"user {email}"
        desired = {"name": self.text(spec, "name", what, nullable=False), "timeZone": self.zone(spec, "timeZone", what),
                   **self.agent(spec, what)}
        user_id = self.users.get(email)
        if user_id is None:
            if desired["name"] is MISSING:
                self.fail(spec.line, f"{what}: missing name (needed to create the user)")
            user_id = self.create("user", {"email": email, **_given(desired)}, spec.line)
            self.users[email] = user_id
            self.change(f"+ user {email}")
        else:
            row = m.User.get_by_id(user_id)
            changed = self.differences("user", row, desired)
            if changed:
                self.change(f"~ user {email}: {self.describe('user', row, changed)}")
                self.update("user", user_id, changed, spec.line)
        numbers = self.sequence(spec, "numbers", what)
        if numbers is not None:
            self.numbers(user_id, email, numbers)

    AGENT_KEYS = ("number", "canMakeOutboundCalls", "availability", "avatarUrl")

    def agent(self, spec: YMap, what: str) -> dict:
        """A user's agent fields: ``agent: false`` (not an agent), ``agent: true``, or a mapping (an
        agent, with the keys it gives; an absent key leaves that field alone)."""
        value = spec.get("agent", MISSING)
        if value is MISSING:
            return {}
        if isinstance(value, bool):
            return {"isAgent": value}
        where = f"{what}: agent"
        agent = self.mapping(value, spec.line_of("agent"), where, self.AGENT_KEYS)
        return {"isAgent": True,
                "agentNumber": self.text(agent, "number", where, max_length=64),
                "canMakeOutboundCalls": self.boolean(agent, "canMakeOutboundCalls", where),
                "agentAvailability": self.choice(agent, "availability", where, cc.AgentAvailability, nullable=False),
                "avatarUrl": self.text(agent, "avatarUrl", where, max_length=500)}

    def choice(self, parent: YMap, key: str, what: str, enum_class, nullable: bool = False) -> Any:
        value = parent.get(key, MISSING)
        if value is MISSING or (value is None and nullable):
            return value
        allowed = [member.value for member in enum_class]
        if not isinstance(value, str) or value not in allowed:
            self.fail(parent.line_of(key), f"{what}: {key} must be one of {', '.join(allowed)}, not {value!r}")
        return value

    def phone(self, parent: YMap, key: str, what: str) -> Any:
        """A phone number in E.164 (national formats read in the default region); null clears it."""
        value = self.text(parent, key, what, max_length=64)
        if value is MISSING or value is None:
            return value
        try:
            return to_e164(value, self.region)
        except InvalidNumber as exc:
            self.fail(parent.line_of(key), f"{what}: {key}: {exc}")

    def numbers(self, user_id: uuid.UUID, email: str, items: YSeq) -> None:
        Number = m.UserIncomingCallNumber
        existing = {(row.phoneNumber or row.sipUri): row for row in Number.select().where(Number.user == user_id)}
        wanted: set[str] = set()

        def one(item: Any, line: int) -> None:
            what = f"a number of {email}"
            verified = True
            if isinstance(item, YMap):
                spec = self.mapping(item, line, what, ("phone", "sip", "verified"))
                if ("phone" in spec) == ("sip" in spec):
                    self.fail(line, f"{what}: give either phone or sip")
                raw = self.text(spec, "phone" if "phone" in spec else "sip", what, max_length=255, nullable=False)
                kind = "phone" if "phone" in spec else "sip"
                verified = self.boolean(spec, "verified", what)
                verified = True if verified is MISSING else verified
            elif isinstance(item, (str, int)) and not isinstance(item, bool):
                raw = str(item)
                kind = "sip" if raw.strip().lower().startswith(("sip:", "sips:")) else "phone"
            else:
                self.fail(line, f"{what}: a phone number (E.164), a SIP URI, or a mapping of phone/sip and verified")
            try:
                address = to_e164(raw, self.region) if kind == "phone" else validate_sip_uri(raw)
            except InvalidNumber as exc:
                self.fail(line, f"{what}: {exc}")
            if address in wanted:
                self.fail(line, f"{what}: {address} is listed twice")
            wanted.add(address)
            row = existing.get(address)
            field_name = "phoneNumber" if kind == "phone" else "sipUri"
            if row is None:
                self.create("user-incoming-call-number",
                            {"userId": user_id, field_name: address, "isVerified": verified}, line)
                self.change(f"+ number {address} of {email}" + (" (verified)" if verified else " (unverified)"))
            elif verified and not row.isVerified:
                verification.mark_verified(row.id)
                self.change(f"~ number {address} of {email}: verified")

        self.each(items, one)
        for address, row in existing.items():
            if address not in wanted:
                self.delete("user-incoming-call-number", row.id, items.line)
                self.change(f"- number {address} of {email}")

    # -- teams

    def team(self, item: Any, line: int) -> None:
        spec = self.mapping(item, line, "team", ("name", "description", "members"), ("name",))
        name = self.text(spec, "name", "team", nullable=False)
        what = f"team {name}"
        if name in self.teams:
            self.fail(line, f"{what}: named twice in the file")
        desired = {"description": self.text(spec, "description", what, max_length=MAX_LONG_TEXT)}
        Team = m.Team
        rows = list(Team.select().where(Team.project == self.ctx.project_id, Team.name == name))
        if len(rows) > 1:
            self.fail(line, f"{what}: several teams have this name in the project: rename them")
        if rows:
            row = rows[0]
            team_id = row.id
            changed = self.differences("team", row, desired)
            if changed:
                self.change(f"~ {what}: {self.describe('team', row, changed)}")
                self.update("team", team_id, changed, spec.line)
        else:
            team_id = self.create("team", {"name": name, **_given(desired)}, spec.line)
            self.change(f"+ {what}")
        self.teams[name] = team_id
        members = self.sequence(spec, "members", what)
        if members is None:
            return
        Member = m.TeamMember
        existing = {user_id: member_id for member_id, user_id in
                    Member.select(Member.id, Member.user).where(Member.team == team_id).tuples()}
        emails = {user_id: email for email, user_id in self.users.items()}
        wanted = set()

        def member(value: Any, member_line: int) -> None:
            user_id = self.user_ref(value, member_line, f"{what}: members")
            if user_id in wanted:
                self.fail(member_line, f"{what}: {value} is listed twice")
            wanted.add(user_id)
            if user_id not in existing:
                self.create("team-member", {"teamId": team_id, "userId": user_id}, member_line)
                self.change(f"+ {what}: member {emails.get(user_id, user_id)}")

        self.each(members, member)
        for user_id, member_id in existing.items():
            if user_id not in wanted:
                self.delete("team-member", member_id, members.line)
                self.change(f"- {what}: member {emails.get(user_id, user_id)}")

    # -- schedules

    def schedule(self, item: Any, line: int) -> None:
        spec = self.mapping(item, line, "schedule", ("name", "description", "timeZone", "layers", "overrides"),
                            ("name",))
        name = self.text(spec, "name", "schedule", nullable=False)
        what = f"schedule {name}"
        if name in self.schedules:
            self.fail(line, f"{what}: named twice in the file")
        desired = {"description": self.text(spec, "description", what, max_length=MAX_LONG_TEXT),
                   "timeZone": self.zone(spec, "timeZone", what)}
        S = m.OnCallDutyPolicySchedule
        row = S.get_or_none(S.project == self.ctx.project_id, S.name == name)
        if row is None:
            schedule_id = self.create("on-call-duty-policy-schedule", {"name": name, **_given(desired)}, spec.line)
            self.change(f"+ {what}")
            zone = desired["timeZone"] if desired["timeZone"] is not MISSING else "UTC"
        else:
            schedule_id = row.id
            changed = self.differences("on-call-duty-policy-schedule", row, desired)
            if changed:
                self.change(f"~ {what}: {self.describe('on-call-duty-policy-schedule', row, changed)}")
                self.update("on-call-duty-policy-schedule", schedule_id, changed, spec.line)
            zone = desired["timeZone"] if desired["timeZone"] is not MISSING else row.timeZone
        self.schedules[name] = schedule_id
        layers = self.sequence(spec, "layers", what)
        if layers is not None:
            self.layers(schedule_id, what, zone, layers)
        overrides = self.sequence(spec, "overrides", what)
        if overrides is not None:
            self.overrides(schedule_id, what, zone, overrides)

    def layers(self, schedule_id: uuid.UUID, what: str, zone: str, items: YSeq) -> None:
        L, LU = m.OnCallDutyPolicyScheduleLayer, m.OnCallDutyPolicyScheduleLayerUser
        existing = list(L.select().where(L.onCallDutyPolicySchedule == schedule_id).order_by(L.order))
        path = "on-call-duty-policy-schedule-layer"

        position = iter(range(len(items)))

        def one(item: Any, line: int) -> None:
            index = next(position)
            where = f"{what}: layer {index + 1}"
            spec = self.mapping(item, line, where, ("name", "description", "start", "rotation", "handoffTime",
                                                    "restrictions", "users"), ("start", "rotation", "users"))
            interval, count = self.rotation(spec, where)
            desired = {
                "name": self.text(spec, "name", where),
                "description": self.text(spec, "description", where, max_length=MAX_LONG_TEXT),
                "startsAt": self.instant(spec, "start", where, zone),
                "rotationInterval": interval,
                "rotationIntervalCount": count,
                "handOffTime": self.handoff(spec, where),
                "restrictionTimes": self.restrictions(spec, where),
            }
            desired = {k: (None if v is MISSING and k in ("name", "description", "handOffTime") else v)
                       for k, v in desired.items()}
            users = self.sequence(spec, "users", where)
            user_ids = []
            for user_index, value in enumerate(users):
                user_ids.append(self.user_ref(value, users.line_of(user_index), f"{where}: users"))
            if index < len(existing):
                row = existing[index]
                layer_id = row.id
                changed = self.differences(path, row, desired)
                if changed:
                    self.change(f"~ {where}: {self.describe(path, row, changed)}")
                    self.update(path, layer_id, changed, spec.line)
            else:
                layer_id = self.create(path, {"onCallDutyPolicyScheduleId": schedule_id, **desired}, spec.line)
                self.change(f"+ {where}" + (f" {desired['name']!r}" if desired["name"] else ""))
            current_users = list(LU.select(LU.id, LU.user).where(LU.onCallDutyPolicyScheduleLayer == layer_id)
                                 .order_by(LU.order).tuples())
            if [user_id for _, user_id in current_users] != user_ids:
                emails = {user_id: email for email, user_id in self.users.items()}
                if current_users:
                    self.change(f"~ {where}: users {', '.join(emails.get(u, str(u)) for _, u in current_users)} -> "
                                f"{', '.join(emails.get(u, str(u)) for u in user_ids)}")
                for link_id, _ in current_users:
                    self.delete("on-call-duty-policy-schedule-layer-user", link_id, users.line)
                for user_index, user_id in enumerate(user_ids):
                    self.create("on-call-duty-policy-schedule-layer-user",
                                {"onCallDutyPolicyScheduleLayerId": layer_id, "userId": user_id},
                                users.line_of(user_index))

        self.each(items, one)
        for row in existing[len(items):]:
            self.delete(path, row.id, items.line)
            self.change(f"- {what}: layer {row.order}" + (f" {row.name!r}" if row.name else ""))

    def rotation(self, spec: YMap, where: str) -> tuple[str, int]:
        value = spec.get("rotation")
        match = re.match(r"^\s*(\d+)?\s*(hour|day|week)s?\s*$", str(value), re.I) if isinstance(value, str) else None
        count = int(match[1]) if match and match[1] else 1
        if match is None or not 1 <= count <= 1000:
            self.fail(spec.line_of("rotation"), f"{where}: rotation must be like \"1 week\", \"2 days\" or "
                                                f"\"12 hours\" (1 to 1000), not {value!r}")
        return match[2].capitalize(), count

    def handoff(self, spec: YMap, where: str) -> Any:
        value = spec.get("handoffTime", MISSING)
        if value is MISSING or value is None:
            return MISSING
        try:
            return oncall.format_time_of_day(oncall.parse_time_of_day(value))
        except oncall.FormatError as exc:
            self.fail(spec.line_of("handoffTime"), f"{where}: handoffTime: {exc.message}")

    def restrictions(self, spec: YMap, where: str, key: str = "restrictions") -> list:
        items = self.sequence(spec, key, where)
        if items is None:
            return []
        stored = []
        for index, item in enumerate(items):
            line = items.line_of(index)
            window = self.mapping(item, line, f"{where}: restriction", ("daily", "weekly", "days"))
            if ("daily" in window) == ("weekly" in window):
                self.fail(line, f"{where}: a restriction is either daily: \"09:00-17:00\" or weekly: "
                                "\"Friday 18:00 - Monday 08:00\"")
            if "daily" in window:
                parts = str(window["daily"]).split("-")
                entry = {"type": "Daily", "startTime": parts[0].strip(),
                         "endTime": parts[1].strip() if len(parts) == 2 else ""}
                if window.get("days") is not None:
                    entry["days"] = list(window["days"]) if isinstance(window["days"], list) else window["days"]
                bad = len(parts) != 2
            else:
                if "days" in window:
                    self.fail(window.line_of("days"), f"{where}: days is for daily restrictions")
                parts = [part.split() for part in str(window["weekly"]).split("-")]
                bad = len(parts) != 2 or any(len(part) != 2 for part in parts)
                entry = {} if bad else {"type": "Weekly", "startDay": parts[0][0], "startTime": parts[0][1],
                                        "endDay": parts[1][0], "endTime": parts[1][1]}
            if bad:
                self.fail(line, f"{where}: restriction {dict(window)} is not like daily: \"09:00-17:00\" or weekly: "
                                "\"Friday 18:00 - Monday 08:00\"")
            try:
                stored += oncall.restrictions_to_json(oncall.parse_restrictions([entry]))
            except oncall.FormatError as exc:
                self.fail(line, f"{where}: restriction: {exc.message}")
        return stored

    def overrides(self, schedule_id: uuid.UUID, what: str, zone: str, items: YSeq) -> None:
        O = m.OnCallDutyPolicyScheduleOverride
        path = "on-call-duty-policy-schedule-override"
        existing = {(row.userId, row.startsAt, row.endsAt): row
                    for row in O.select().where(O.onCallDutyPolicySchedule == schedule_id)}
        wanted = set()

        def one(item: Any, line: int) -> None:
            where = f"{what}: override"
            spec = self.mapping(item, line, where, ("user", "start", "end", "description"), ("user", "start", "end"))
            user_id = self.user_ref(spec["user"], spec.line_of("user"), where)
            start, end = self.instant(spec, "start", where, zone), self.instant(spec, "end", where, zone)
            description = self.text(spec, "description", where, max_length=MAX_LONG_TEXT)
            description = None if description is MISSING else description
            key = (user_id, start, end)
            label = f"{where} {spec['user']} {render_value(start)} - {render_value(end)}"
            if key in wanted:
                self.fail(line, f"{label}: listed twice")
            wanted.add(key)
            row = existing.get(key)
            if row is None:
                self.create(path, {"onCallDutyPolicyScheduleId": schedule_id, "userId": user_id, "startsAt": start,
                                   "endsAt": end, "description": description}, line)
                self.change(f"+ {label}")
            elif row.description != description:
                self.update(path, row.id, {"description": description}, line)
                self.change(f"~ {label}: description {row.description!r} -> {description!r}")

        self.each(items, one)
        for key, row in existing.items():
            if key not in wanted:
                self.delete(path, row.id, items.line)
                self.change(f"- {what}: override {render_value(row.startsAt)} - {render_value(row.endsAt)}")

    def target_of(self, rule: m.IncomingCallPolicyEscalationRule) -> str:
        """An existing rule's target, by name."""
        if rule.userId is not None:
            emails = {user_id: email for email, user_id in self.users.items()}
            return f"user {emails.get(rule.userId) or m.User.get_by_id(rule.userId).name}"
        if rule.teamId is not None:
            return f"team {m.Team.get_by_id(rule.teamId).name}"
        if rule.onCallDutyPolicyScheduleId is not None:
            return f"schedule {m.OnCallDutyPolicySchedule.get_by_id(rule.onCallDutyPolicyScheduleId).name}"
        return "none"

    # -- policies and their rules

    POLICY_FIELDS = {"description": "text", "routingPhoneNumber": "phone", "greetingMessage": "text",
                     "noAnswerMessage": "text", "noOneAvailableMessage": "text", "isEnabled": "bool",
                     "repeatPolicyIfNoOneAnswers": "bool", "repeatPolicyIfNoOneAnswersTimes": "int",
                     "requireAnswerConfirmation": "bool", "businessHoursTimeZone": "zone",
                     "businessHours": "windows", "afterHoursMessage": "text", "callerBlockList": "callers",
                     "callerAllowList": "callers", "blockedCallerMessage": "text", "voicemailOnNoAnswer": "bool",
                     "voicemailMaxSeconds": "voicemail seconds"}

    def callers(self, spec: YMap, key: str, what: str) -> Any:
        """A caller list: E.164 numbers (national ones read in the default region) and prefix patterns
        like "+1415*"; null or [] for none."""
        items = self.sequence(spec, key, what)
        if items is None:
            return MISSING
        entries = []
        for index, item in enumerate(items):
            value = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            try:
                entries.append(admission.normalize_entry(value, self.region))
            except admission.EntryError as exc:
                self.fail(items.line_of(index), f"{what}: {key}: {exc.message}")
        if len(entries) > admission.MAX_LIST_ENTRIES:
            self.fail(items.line, f"{what}: {key}: at most {admission.MAX_LIST_ENTRIES} entries")
        return list(dict.fromkeys(entries))

    def policy(self, item: Any, line: int) -> None:
        spec = self.mapping(item, line, "policy", ("name", "slug", *self.POLICY_FIELDS, "rules"), ("name",))
        name = self.text(spec, "name", "policy", nullable=False)
        slug = self.text(spec, "slug", "policy", max_length=220, nullable=False)
        what = f"policy {slug if slug is not MISSING else name}"
        if slug is not MISSING and slugify(slug) != slug:
            self.fail(spec.line_of("slug"), f"{what}: slug must be lowercase letters, digits and dashes")
        desired: dict[str, Any] = {"name": name}
        for key, kind in self.POLICY_FIELDS.items():
            if kind == "text":
                desired[key] = self.text(spec, key, what, max_length=MAX_LONG_TEXT)
            elif kind == "bool":
                desired[key] = self.boolean(spec, key, what)
            elif kind == "int":
                desired[key] = self.integer(spec, key, what, 0, 1000)
            elif kind == "voicemail seconds":
                desired[key] = self.integer(spec, key, what, VOICEMAIL_MIN_SECONDS, VOICEMAIL_MAX_SECONDS)
            elif kind == "zone":
                desired[key] = self.zone(spec, key, what)
            elif kind == "windows":
                desired[key] = self.restrictions(spec, what, key) if key in spec else MISSING
            elif kind == "callers":
                desired[key] = self.callers(spec, key, what)
            else:
                value = self.text(spec, key, what, max_length=64)
                if value not in (MISSING, None):
                    try:
                        value = to_e164(value, self.region)
                    except InvalidNumber as exc:
                        self.fail(spec.line_of(key), f"{what}: {key}: {exc}")
                desired[key] = value
        P = m.IncomingCallPolicy
        query = P.select().where(P.project == self.ctx.project_id)
        rows = list(query.where(P.slug == slug) if slug is not MISSING else query.where(P.name == name))
        if len(rows) > 1:
            self.fail(line, f"{what}: several policies are named {name!r} in the project: give a slug")
        path = "incoming-call-policy"
        if rows:
            row = rows[0]
            policy_id = row.id
            changed = self.differences(path, row, desired)
            if changed:
                self.change(f"~ {what}: {self.describe(path, row, changed)}")
                self.update(path, policy_id, changed, spec.line)
        else:
            policy_id = self.create(path, _given(desired), spec.line)
            if slug is not MISSING:
                if P.select().where(P.slug == slug, P.id != policy_id).exists():
                    self.fail(spec.line_of("slug"), f"{what}: the slug {slug!r} is already used by another policy")
                P.update(slug=slug).where(P.id == policy_id).execute()
            self.change(f"+ {what}")
        rules = self.sequence(spec, "rules", what)
        if rules is not None:
            self.rules(policy_id, what, rules)

    def rules(self, policy_id: uuid.UUID, what: str, items: YSeq) -> None:
        Rule = m.IncomingCallPolicyEscalationRule
        path = "incoming-call-policy-escalation-rule"
        existing = list(Rule.select().where(Rule.incomingCallPolicy == policy_id).order_by(Rule.order))
        position = iter(range(len(items)))

        def one(item: Any, line: int) -> None:
            index = next(position)
            where = f"{what}: rule {index + 1}"
            spec = self.mapping(item, line, where, ("name", "description", "escalateAfterSeconds", "user", "team",
                                                    "schedule"))
            targets = [key for key in ("user", "team", "schedule") if spec.get(key) is not None]
            if len(targets) != 1:
                self.fail(line, f"{where}: give exactly one target: user (an email), team or schedule (a name)")
            target = targets[0]
            target_line = spec.line_of(target)
            desired = {
                "name": self.text(spec, "name", where),
                "description": self.text(spec, "description", where, max_length=MAX_LONG_TEXT),
                "escalateAfterSeconds": self.integer(spec, "escalateAfterSeconds", where, 1, 3600),
                "userId": self.user_ref(spec[target], target_line, where) if target == "user" else None,
                "teamId": (self.named_ref("team", spec[target], target_line, where, self.teams, m.Team)
                           if target == "team" else None),
                "onCallDutyPolicyScheduleId": (
                    self.named_ref("schedule", spec[target], target_line, where, self.schedules,
                                   m.OnCallDutyPolicySchedule) if target == "schedule" else None),
            }
            desired = {k: (None if v is MISSING and k in ("name", "description") else v) for k, v in desired.items()}
            if desired["escalateAfterSeconds"] is MISSING:
                desired["escalateAfterSeconds"] = 30
            if index < len(existing):
                row = existing[index]
                changed = self.differences(path, row, desired)
                if changed:
                    said = {k: v for k, v in changed.items() if k not in TARGETS}
                    parts = [self.describe(path, row, said)] if said else []
                    if len(said) < len(changed):  # the target changed: say it with names
                        parts.append(f"target {self.target_of(row)} -> {target} {spec[target]}")
                    self.change(f"~ {where}: {', '.join(parts)}")
                    self.update(path, row.id, {**changed, **{k: desired[k] for k in TARGETS}}, line)
            else:
                self.create(path, {"incomingCallPolicyId": policy_id, "order": index + 1, **desired}, line)
                self.change(f"+ {where}: {target} {spec[target]}")

        self.each(items, one)
        for row in reversed(existing[len(items):]):
            self.delete(path, row.id, items.line)
            self.change(f"- {what}: rule {row.order}")

    # -- the contact center: outbound numbers

    def outbound_numbers(self, items: YSeq) -> None:
        """The project's outbound numbers: the list is the whole truth (unlisted numbers are deleted);
        ``default: true`` on at most one."""
        N = m.OutboundPhoneNumber
        path = "outbound-phone-number"
        wanted: dict[str, int] = {}
        defaults: list[int] = []

        def one(item: Any, line: int) -> None:
            what = "outbound number"
            if isinstance(item, (str, int)) and not isinstance(item, bool):
                spec = YMap(number=str(item))
                spec.line, spec.lines = line, {}
            else:
                spec = self.mapping(item, line, what, ("number", "name", "default"), ("number",))
            number = self.phone(spec, "number", what)
            what = f"outbound number {number}"
            if number in wanted:
                self.fail(line, f"{what}: listed twice (also line {wanted[number]})")
            wanted[number] = line
            default = self.boolean(spec, "default", what)
            default = False if default is MISSING else default
            if default:
                defaults.append(spec.line_of("default"))
                if len(defaults) > 1:
                    self.fail(spec.line_of("default"), f"{what}: only one outbound number can be the default "
                                                       f"(line {defaults[0]} is already)")
            name = self.text(spec, "name", what)
            desired = {"name": None if name is MISSING else name, "isDefault": default}
            row = N.get_or_none(N.project == self.ctx.project_id, N.phoneNumber == number)  # fresh: defaults move
            if row is None:
                self.outbound[number] = self.create(path, {"phoneNumber": number, **desired}, line)
                self.change(f"+ {what}" + (" (default)" if default else ""))
                return
            changed = self.differences(path, row, desired)
            if changed:
                self.change(f"~ {what}: {self.describe(path, row, changed)}")
                self.update(path, row.id, changed, line)

        self.each(items, one)
        for number, row_id in list(self.outbound.items()):
            if number not in wanted:
                self.delete(path, row_id, items.line)
                del self.outbound[number]
                self.change(f"- outbound number {number}")

    # -- the contact center: menus

    MENU_FIELDS = ("name", "type", "message", "languages", "state", "timeZone", "openingHours", "routingNumber",
                   "redirectionNumber", "offer", "groupDelaySeconds", "recording", "outboundNumber", "hidden",
                   "policy", "queue", "children", "maxWaitSeconds", "noAgent", "afterHours", "deflectionMessage",
                   "voicemailMaxSeconds", "callbackDelaySeconds")

    def menus(self, items: YSeq) -> None:
        """Root menus, matched by name among the project's roots (roots the file does not name are left
        alone); below each, ``children`` is the whole list of its children (matched by name, positioned by
        their order: the first is key 1), ``queue`` the whole queue."""
        seen: dict[str, int] = {}
        self.each(items, lambda item, line: self.menu(item, line, None, "", None, seen))

    def languages(self, spec: YMap, what: str) -> Any:
        value = spec.get("languages", MISSING)
        if value is MISSING:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.fail(spec.line_of("languages"), f"{what}: languages must be a list of ISO 639-1 codes, e.g. [en, fr]")
        for code in value:
            if not cc.is_language(code):
                self.fail(spec.line_of("languages"), f"{what}: languages: Language {code!r} is not found (ISO 639-1 "
                                                     "codes: two lowercase letters, e.g. en, fr)")
        return list(dict.fromkeys(value))

    def policy_ref(self, value: Any, line: int, what: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(line, f"{what}: policy is named by its slug or name")
        P = m.IncomingCallPolicy
        base = P.select(P.id).where(P.project == self.ctx.project_id)
        found = [row_id for (row_id,) in base.where(P.slug == value).tuples()] or \
            [row_id for (row_id,) in base.where(P.name == value).tuples()]
        if len(found) > 1:
            self.fail(line, f"{what}: several policies are named {value!r}: name it by its slug")
        if not found:
            self.fail(line, f"{what}: no Incoming Call Policy with the slug or name {value!r} "
                            "(neither in this file nor in the project)")
        return found[0]

    def menu(self, item: Any, line: int, parent_id: uuid.UUID | None, prefix: str, position: int | None,
             seen: dict[str, int]) -> uuid.UUID:
        spec = self.mapping(item, line, f"{prefix or 'menu'}: menu" if prefix else "menu", self.MENU_FIELDS,
                            ("name",))
        name = self.text(spec, "name", "menu", nullable=False)
        what = f"{prefix} > {name}" if prefix else f"menu {name}"
        if name in seen:
            self.fail(spec.line_of("name"), f"{what}: named twice (also line {seen[name]})")
        seen[name] = spec.line_of("name")
        outbound = self.phone(spec, "outboundNumber", what)
        if outbound not in (MISSING, None):
            if outbound not in self.outbound:
                self.fail(spec.line_of("outboundNumber"), f"{what}: outboundNumber {outbound} is not an outbound "
                                                          "number of the project (list it in outboundNumbers)")
            outbound = self.outbound[outbound]
        desired = {
            "menuType": self.choice(spec, "type", what, cc.MenuType),
            "outputMessage": self.text(spec, "message", what, max_length=MAX_LONG_TEXT),
            "languages": self.languages(spec, what),
            "state": self.choice(spec, "state", what, cc.MenuState),
            "timeZone": self.zone(spec, "timeZone", what),
            "openingHours": self.restrictions(spec, what, "openingHours") if "openingHours" in spec else MISSING,
            "routingPhoneNumber": self.phone(spec, "routingNumber", what),
            "redirectionNumber": self.phone(spec, "redirectionNumber", what),
            "offerType": self.choice(spec, "offer", what, cc.OfferType),
            "cascadeGroupDelaySeconds": self.integer(spec, "groupDelaySeconds", what, 1, 3600),
            "recordingOption": self.choice(spec, "recording", what, cc.RecordingOption),
            "maxWaitSeconds": self.integer(spec, "maxWaitSeconds", what, 5, 3600),
            "noAgentDeflection": self.choice(spec, "noAgent", what, cc.MenuDeflection),
            "afterHoursDeflection": self.choice(spec, "afterHours", what, cc.MenuDeflection),
            "deflectionMessage": self.text(spec, "deflectionMessage", what, max_length=MAX_LONG_TEXT),
            "voicemailMaxSeconds": self.integer(spec, "voicemailMaxSeconds", what, 5, 600),
            "callbackDelaySeconds": self.integer(spec, "callbackDelaySeconds", what, 5, 7 * 86400),
            "outboundPhoneNumberId": outbound,
            "hidden": self.boolean(spec, "hidden", what),
            "position": MISSING if position is None else position,
        }
        policy = spec.get("policy", MISSING)
        if policy is not MISSING:
            policy = self.policy_ref(policy, spec.line_of("policy"), what)
        M = m.CallMenu
        query = M.select().where(M.project == self.ctx.project_id, M.name == name,
                                 M.parent.is_null() if parent_id is None else M.parent == parent_id)
        rows = list(query)
        if len(rows) > 1:
            self.fail(line, f"{what}: several menus have this name {'here' if prefix else 'at the root'} in the "
                            "project: rename them")
        path = "call-menu"
        # A policy is set last (after the queue and the children are made to match), cleared first.
        early = {} if policy is MISSING or policy is not None else {"incomingCallPolicyId": None}
        if rows:
            row = rows[0]
            menu_id = row.id
            changed = self.differences(path, row, {**desired, **early})
            if changed:
                self.change(f"~ {what}: {self.describe_menu(row, changed)}")
                self.update(path, menu_id, changed, spec.line)
        else:
            row = None
            menu_id = self.create(path, {"name": name, "parentId": parent_id, **_given(desired)}, spec.line)
            self.change(f"+ {what}")
        queue = self.sequence(spec, "queue", what)
        if queue is not None:
            self.queue(menu_id, what, queue)
        children = self.sequence(spec, "children", what)
        if children is not None:
            self.children(menu_id, what, children)
        if policy is not MISSING and policy is not None and (row is None or row.incomingCallPolicyId != policy):
            if row is not None:
                self.change(f"~ {what}: {self.describe_menu(row, {'incomingCallPolicyId': policy})}")
            self.update(path, menu_id, {"incomingCallPolicyId": policy}, spec.line_of("policy"))
        return menu_id

    def describe_menu(self, row: m.CallMenu, changed: dict) -> str:
        """The changes of a menu, its references by name (a policy's slug, an outbound number)."""
        numbers = {row_id: number for number, row_id in self.outbound.items()}
        parts = []
        for name, value in changed.items():
            old = current(BY_PATH["call-menu"], row, name)
            if name == "incomingCallPolicyId":
                slugs = {p.id: p.slug for p in m.IncomingCallPolicy.select().where(
                    m.IncomingCallPolicy.id.in_([v for v in (old, value) if v is not None]))}
                parts.append(f"policy {slugs.get(old, 'none')} -> {slugs.get(value, 'none')}")
            elif name == "outboundPhoneNumberId":
                parts.append(f"outboundNumber {numbers.get(old, 'none')} -> {numbers.get(value, 'none')}")
            else:
                parts.append(f"{name} {_fmt(old)} -> {_fmt(value)}")
        return ", ".join(parts)

    def queue(self, menu_id: uuid.UUID, what: str, items: YSeq) -> None:
        A = m.CallMenuAgent
        path = "call-menu-agent"
        existing = {row.userId: row for row in A.select().where(A.callMenu == menu_id)}
        emails = {user_id: email for email, user_id in self.users.items()}
        wanted: set[uuid.UUID] = set()

        def one(item: Any, line: int) -> None:
            where = f"{what}: queue"
            if isinstance(item, YMap):
                spec = self.mapping(item, line, where, ("agent", "group"), ("agent",))
                group = self.integer(spec, "group", where, 1, 1000)
                value = spec["agent"]
            else:
                group, value = MISSING, item
            group = 1 if group is MISSING else group
            user_id = self.user_ref(value, line, where)
            if user_id in wanted:
                self.fail(line, f"{where}: {value} is listed twice")
            wanted.add(user_id)
            row = existing.get(user_id)
            if row is None:
                self.create(path, {"callMenuId": menu_id, "userId": user_id, "groupNumber": group}, line)
                self.change(f"+ {where}: {emails.get(user_id, user_id)} (group {group})")
            elif row.groupNumber != group:
                self.update(path, row.id, {"groupNumber": group}, line)
                self.change(f"~ {where}: {emails.get(user_id, user_id)}: group {row.groupNumber} -> {group}")

        self.each(items, one)
        for user_id, row in existing.items():
            if user_id not in wanted:
                self.delete(path, row.id, items.line)
                self.change(f"- {what}: queue {emails.get(user_id, user_id)}")

    def children(self, menu_id: uuid.UUID, what: str, items: YSeq) -> None:
        M = m.CallMenu
        seen: dict[str, int] = {}
        position = iter(range(len(items)))
        self.each(items, lambda item, line: self.menu(item, line, menu_id, what, next(position), seen))
        for row in M.select().where(M.parent == menu_id).order_by(M.position, M.name):
            if row.name not in seen:
                self.delete_menu(row, items.line)
                self.change(f"- {what} > {row.name}")

    def delete_menu(self, row: m.CallMenu, line: int) -> None:
        """A menu and everything below it (its queue goes with it)."""
        M = m.CallMenu
        for child in M.select().where(M.parent == row.id):
            self.delete_menu(child, line)
        self.delete("call-menu", row.id, line)


TARGETS = ("userId", "teamId", "onCallDutyPolicyScheduleId")


def current(resource: Resource, row: m.BaseModel, name: str) -> Any:
    """A row's value of an API field, in the form the database gives it."""
    column = resource.schema.fields[name].column
    return getattr(row, getattr(column, "object_id_name", None) or column.name)


def _given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not MISSING}


def _api(values: dict) -> dict:
    """Values in the API's JSON form (ids and dates as text)."""
    out = {}
    for key, value in values.items():
        if value is MISSING:
            continue
        out[key] = render_value(value) if isinstance(value, (uuid.UUID, dt.datetime)) else value
    return out


def apply(text: str, path: str, *, default_region: str = "US", dry_run: bool = False,
          project: str | None = None, allowed_sip_hosts: tuple[str, ...] | None = None,
          codes_per_day: int = verification.CODES_PER_DAY) -> Result:
    """Applies the YAML ``text`` (named ``path`` in messages) in one transaction (rolled back when
    ``dry_run`` or when anything is wrong: then ``SyncError`` lists every problem)."""
    document = load(text, path)
    if allowed_sip_hosts is None:
        allowed_sip_hosts = tuple(setting_default("sip.allowed_hosts"))
    sync = Sync(document, path, default_region, allowed_sip_hosts, codes_per_day)
    with write_transaction() as transaction:
        project_id = sync.run(project)
        if sync.problems:
            transaction.rollback()
            raise SyncError(sync.problems)
        if dry_run:
            transaction.rollback()
    return Result(project_id, sync.changes, applied=not dry_run)

