"""Core subcommands: migrate, project, apikey, config, serve."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging

from ivr.errors import CommandError
from ivr.config import SETTINGS, Config
from ivr.db import DatabaseConfigError, migrate, migration_status, run_sync

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
    from ivr.models import Project

    async def go(db):
        await _require_migrated(db)
        return await Project.acreate(name=args.name)

    project = _run_db(config, go)
    print(project.id)
    return 0


def cmd_project_list(config: Config, args) -> int:
    from ivr.models import Project

    async def go(db):
        await _require_migrated(db)
        return await db.list(Project.select().order_by(Project.createdAt))

    for project in _run_db(config, go):
        print(f"{project.id}  {project.name}")
    return 0


def _parse_expiry(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--expires: {text!r} is not an ISO 8601 date-time (e.g. 2027-01-31T00:00:00Z)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def cmd_apikey_create(config: Config, args) -> int:
    import uuid

    from api.auth import ROLE_NAMES, hash_key, new_key
    from ivr.models import ApiKey, Project

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
    from ivr.db import pending_migrations

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


def cmd_serve(config: Config, args) -> int:
    from ivr.serve import serve

    if args.api_only and args.controller_only:
        raise CommandError("--api-only and --controller-only exclude each other")
    from ivr.tts import TTSError

    try:
        asyncio.run(serve(config, api=not args.controller_only, controller=not args.api_only))
    except (RuntimeError, TTSError) as exc:
        raise CommandError(str(exc)) from None
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

    p = sub.add_parser("serve", help="run the REST API and the call controller")
    p.add_argument("--api-only", action="store_true", help="run only the REST API")
    p.add_argument("--controller-only", action="store_true", help="run only the call controller")
    p.set_defaults(func=cmd_serve)
