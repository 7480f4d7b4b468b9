"""Core subcommands: migrate, project, apikey, config, oncall, number (serve and sync: ivr.main)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging

from ivr.errors import CommandError
from ivr.config import SETTINGS, Config
from ivr.store.db import DatabaseConfigError, migrate, migration_status, run_sync

log = logging.getLogger(__name__)

ROLE_CHOICES = ("owner", "admin", "member", "viewer")


def _run_db(config: Config, fn, *args):
    try:
        return run_sync(config.database_url, fn, *args)
    except DatabaseConfigError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot open the database {config.database_url}: {exc}") from None


def cmd_migrate(config: Config, args) -> int:
    async def go(db):
        if args.status:
            return await migration_status(db)
        return await migrate(db)

    result = _run_db(config, go)
    if args.status:
        pending = 0
        for name, applied in result:
            print(f"[{'x' if applied else ' '}] {name}" + (f"  {applied:%Y-%m-%d %H:%M:%S}" if applied else ""))
            pending += applied is None
        return 1 if pending else 0
    print("\n".join(f"applied: {name}" for name in result) or "the database is up to date")
    return 0


def cmd_project_create(config: Config, args) -> int:
    from ivr.store.models import Project

    async def go(db):
        await _require_migrated(db)
        return await Project.acreate(name=args.name)

    project = _run_db(config, go)
    print(project.id)
    return 0


def cmd_project_list(config: Config, args) -> int:
    from ivr.store.models import Project

    async def go(db):
        await _require_migrated(db)
        return await db.list(Project.select().order_by(Project.createdAt))

    for project in _run_db(config, go):
        print(f"{project.id}  {project.name}")
    return 0


def _parse_expiry(text: str | None, option: str = "--expires") -> dt.datetime | None:
    """An ISO 8601 date-time as naive UTC (without an offset: UTC)."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not an ISO 8601 date-time (e.g. 2027-01-31T00:00:00Z)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def cmd_apikey_create(config: Config, args) -> int:
    import uuid

    from ivr.store.apikeys import ROLE_NAMES, hash_key, new_key
    from ivr.store.models import ApiKey, Project

    expires = _parse_expiry(args.expires)
    if args.role is None and not args.permission:
        raise CommandError("give a --role, or at least one --permission")
    try:
        project_id = uuid.UUID(args.project)
    except ValueError:
        raise CommandError(f"--project: {args.project!r} is not a project id") from None
    key = new_key()

    async def go(db):
        await _require_migrated(db)
        if await Project.aget_or_none(Project.id == project_id) is None:
            raise CommandError(f"no project with id {project_id} (see `hotline project list`)")
        return await ApiKey.acreate(
            project=project_id, name=args.name or f"{args.role or 'custom'} key",
            keyHash=hash_key(key), keyPrefix=key[:10],
            role=ROLE_NAMES[args.role].value if args.role else None,
            permissions=list(args.permission or []), expiresAt=expires)

    _run_db(config, go)
    print(key)
    return 0


async def _require_migrated(db):
    from ivr.store.db import pending_migrations

    pending = await pending_migrations(db)
    if pending:
        raise CommandError(f"the database is not migrated ({', '.join(pending)} pending): run `hotline migrate`")


def cmd_config(config: Config, args) -> int:
    if args.markdown:
        from ivr.config import settings_markdown

        print(settings_markdown(), end="")
        return 0
    print(json.dumps(config.as_dict(), indent=2))
    return 0


def cmd_twilio_key(config: Config, args) -> int:
    """A fresh Fernet key for twilio.encryption_key (the auth tokens of project-level Twilio configurations)."""
    from ivr.store.twilio_accounts import new_key

    print(new_key())
    return 0


# -- on-call schedules ------------------------------------------------------------------


def _find_one(model, ref: str, project: str | None, what: str, by_name):
    """The row of ``model`` whose id is ``ref``, or (else) the one ``by_name(ref)`` selects; in ``project``."""
    import uuid

    query = model.select()
    if project is not None:
        try:
            query = query.where(model.project == uuid.UUID(project))
        except ValueError:
            raise CommandError(f"--project: {project!r} is not a project id") from None
    try:
        rows = list(query.where(model.id == uuid.UUID(ref)))
    except ValueError:
        rows = list(query.where(by_name(ref)).limit(20))
    if not rows:
        raise CommandError(f"no {what} {ref!r}" + (" in that project" if project else ""))
    if len(rows) > 1:
        raise CommandError(f"several {what}s match {ref!r} (in projects "
                           f"{', '.join(sorted({str(r.projectId) for r in rows}))}): give its id or --project")
    return rows[0]


def _local(instant: dt.datetime, tz) -> str:
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def cmd_oncall(config: Config, args) -> int:
    from ivr.store import models as m
    from ivr.core import oncall
    from ivr.store import schedules

    at = _parse_expiry(args.at, "--at") if args.at else m.utcnow()
    if not 0 <= args.next <= 1000:
        raise CommandError("--next: between 0 and 1000")

    def work(ref, project):
        row = _find_one(m.OnCallDutyPolicySchedule, ref, project, "on-call schedule",
                        lambda name: m.OnCallDutyPolicySchedule.name == name)
        schedule = schedules.load_schedule(row.id, overrides_ending_after=at)
        return schedules.report(schedule, row.projectId, at, args.next)

    async def go(db):
        await _require_migrated(db)
        return await db.run(work, args.schedule, args.project)

    report = _run_db(config, go)
    schedule = report.schedule
    tz = oncall.time_zone(schedule.time_zone)

    def who(on_call) -> str:
        if on_call.user is None:
            return "no one"
        user = report.users.get(on_call.user)
        if user is None:
            name = on_call.user
        else:
            name = f"{user.name} <{user.email}>" if user.email else user.name
        if on_call.override:
            source = f"override {on_call.override.name!r}" if on_call.override.name else "override"
        else:
            source = f"layer {on_call.layer.name!r}"
        return f"{name}  ({source})"

    print(f"{schedule.name} ({schedule.time_zone}), at {_local(report.at, tz)} "
          f"({report.at.strftime('%Y-%m-%dT%H:%M:%SZ')}):")
    until = f", until {_local(report.until, tz)}" if report.until else ""
    print(f"  on call: {who(report.on_call)}{until}")
    if args.next:
        print("Next hand-offs:" if report.handoffs else "No hand-off within a year.")
        for handoff in report.handoffs:
            print(f"  {_local(handoff.at, tz)}  {who(handoff.on_call)}")
    return 0


# -- numbers -------------------------------------------------------------------------------


def cmd_number_code(config: Config, args) -> int:
    import sys

    from ivr.store import models as m
    from ivr.store import verification
    from ivr.core.phone import InvalidNumber, normalize_loose, validate_sip_uri

    def by_address(text):
        Number = m.UserIncomingCallNumber
        if text.strip().lower().startswith(("sip:", "sips:")):
            try:
                return Number.sipUri == validate_sip_uri(text)
            except InvalidNumber:
                return Number.sipUri == text
        return Number.phoneNumber == normalize_loose(text, config.sip.default_region)

    def work(ref, project):
        number = _find_one(m.UserIncomingCallNumber, ref, project, "number", by_address)
        return number, verification.pending_code(number)

    async def go(db):
        await _require_migrated(db)
        return await db.run(work, args.number, args.project)

    number, pending = _run_db(config, go)
    address = number.phoneNumber or number.sipUri
    if pending.code is None:
        raise CommandError(f"no code to read for {address}: {pending.reason}")
    print(pending.code)
    print(f"{address}: code valid until {pending.expires_at:%Y-%m-%d %H:%M} UTC; "
          f"{pending.attempts} wrong code(s) tried so far", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.add_argument("--status", action="store_true", help="list migrations and whether each is applied")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("project", help="manage projects")
    psub = p.add_subparsers(dest="project_command", metavar="ACTION")
    psub.required = True
    c = psub.add_parser("create", help="create a project and print its id")
    c.add_argument("name")
    c.set_defaults(func=cmd_project_create)
    c = psub.add_parser("list", help="list projects")
    c.set_defaults(func=cmd_project_list)

    p = sub.add_parser("apikey", help="manage API keys")
    asub = p.add_subparsers(dest="apikey_command", metavar="ACTION")
    asub.required = True
    c = asub.add_parser("create", help="create an API key and print it (shown only once)")
    c.add_argument("--project", required=True, help="project id")
    c.add_argument("--role", choices=ROLE_CHOICES, help="role of the key")
    c.add_argument("--permission", action="append", metavar="NAME",
                   help='a fine-grained permission, e.g. "Read Incoming Call Log" (repeatable)')
    c.add_argument("--name", help="what the key is for")
    c.add_argument("--expires", metavar="ISO8601", help="the key stops working at this time")
    c.set_defaults(func=cmd_apikey_create)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)",
                       description="Settings (each overridable by its environment variable):\n" + "\n".join(
                           f"  {s.name:28} {s.env:32} {s.help}" for s in SETTINGS),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--markdown", action="store_true", help="print the settings table as Markdown")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("oncall", help="who is on call on a schedule, and the next hand-offs")
    p.add_argument("schedule", metavar="SCHEDULE", help="schedule id or name")
    p.add_argument("--at", metavar="ISO8601", help="the moment (default: now; without an offset: UTC)")
    p.add_argument("--next", type=int, default=0, metavar="N", help="also list the next N hand-offs")
    p.add_argument("--project", help="project id (when the name is used in several projects)")
    p.set_defaults(func=cmd_oncall)

    p = sub.add_parser("number", help="users' incoming-call numbers")
    nsub = p.add_subparsers(dest="number_command", metavar="ACTION")
    nsub.required = True
    c = nsub.add_parser("code", help="print the verification code of a number that has not yet been "
                                     "delivered by its phone call")
    c.add_argument("number", metavar="NUMBER", help="number id, phone number or SIP URI")
    c.add_argument("--project", help="project id (when the number is in several projects)")
    c.set_defaults(func=cmd_number_code)

    p = sub.add_parser("twilio", help="Twilio, the optional second provider")
    tsub = p.add_subparsers(dest="twilio_command", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("key", help="print a new key for twilio.encryption_key (HOTLINE_TWILIO_ENCRYPTION_KEY), "
                                    "which encrypts the auth tokens of project-level Twilio configurations")
    c.set_defaults(func=cmd_twilio_key)
