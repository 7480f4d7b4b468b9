"""The composition root: the one module that puts the REST API (``api``) and the call services
(``ivr.shells``) together. Nothing else imports both (``make test`` checks it with import-linter).

:func:`build_app` makes the application ``hotline serve`` runs, and the end-to-end tests run the
same; :func:`main` is the ``hotline`` command (the CLI of ``ivr.cli`` plus ``serve`` and ``sync``,
the two commands that need the API's resources).

One aiohttp cleanup context per resource, started in dependency order and closed in reverse: the
database, the speech synthesizer, the ARI controller, the AMI connection, the FastAGI server (the
escalation routes), the notification calls (AMI to dial, FastAGI to talk).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from api.app import create_app
from ivr import cli
from ivr.asterisk.agi import AgiServer
from ivr.asterisk.ami import AmiClient
from ivr.asterisk.ari import AriClient
from ivr.cli.commands import _require_migrated, _run_db
from ivr.config import Config, connect_host
from ivr.errors import CommandError
from ivr.runtime import DB, METRICS, NOTIFIER, READ, READINESS, TTS, add_metrics_routes, tts_context
from ivr.shells.ari import Controller
from ivr.shells.fastagi import AgiCalls
from ivr.shells.notify import ROUTE as NOTIFY_ROUTE
from ivr.shells.notify import NotificationService
from ivr.tts import TTSError

log = logging.getLogger(__name__)

CONTROLLER = web.AppKey("controller", Controller)
AMI_CLIENT = web.AppKey("ami_client", AmiClient)
AGI_SERVER = web.AppKey("agi_server", AgiServer)
AGI_CALLS = web.AppKey("agi_calls", AgiCalls)


def _lab_secrets(config: Config, name: str, setting: str, env: str, hint: str = "") -> Config:
    with_secrets = config.with_lab_secrets()
    if not with_secrets.get(setting):
        raise RuntimeError(f"no {name}: set {setting} ({env}) or run `hotline asterisk up` to generate the "
                           f"local lab's{hint}")
    return with_secrets


def ari_context(config: Config):
    """The ARI connection and the call controller (the ARI shell) for the app's lifetime."""

    async def ctx(app: web.Application):
        secrets = _lab_secrets(config, "ARI password", "ari.password", "HOTLINE_ARI_PASSWORD")
        ari = AriClient(secrets.ari.url, secrets.ari.username, secrets.ari.password, secrets.ari.app,
                        reconnect_max_delay=config.controller.reconnect_max_delay)
        controller = Controller(config, app[DB], ari, app[TTS], app[READ], app[METRICS])
        app[CONTROLLER] = controller
        app[READINESS]["ari"] = lambda: (ari.connected.is_set(), "not connected to ARI")
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await controller.close()
            await ari.close()

    return ctx


def ami_context(config: Config):
    """The AMI connection (and its supervisor task) for the app's lifetime."""

    async def ctx(app: web.Application):
        metrics = app[METRICS]
        secrets = _lab_secrets(config, "AMI secret", "ami.secret", "HOTLINE_AMI_SECRET")
        client = AmiClient(connect_host(config.ami.host), config.ami.port, config.ami.username,
                           secrets.ami.secret, action_timeout=config.ami.action_timeout,
                           ping_interval=config.ami.ping_interval,
                           reconnect_max_delay=config.controller.reconnect_max_delay)
        client.on_connect(lambda: metrics.ami_connected.set(1))
        client.on_disconnect(lambda: metrics.ami_connected.set(0))
        app[AMI_CLIENT] = client
        app[READINESS]["ami"] = lambda: (client.connected.is_set(), client.last_error or "not connected to AMI")
        task = asyncio.get_running_loop().create_task(client.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            metrics.ami_connected.set(0)

    return ctx


def agi_context(config: Config):
    """The FastAGI server with the escalation routes (the FastAGI shell) for the app's lifetime."""

    async def ctx(app: web.Application):
        metrics = app[METRICS]
        # Like ARI's password: no FastAGI server without its secret (nobody else may run its routes).
        secrets = _lab_secrets(config, "FastAGI secret", "agi.secret", "HOTLINE_AGI_SECRET",
                               "; Asterisk's dialplan passes the same value (`hotline asterisk render` writes it)")
        server = AgiServer(config.agi.host, config.agi.port, secret=secrets.agi.secret,
                           allowed_peers=config.agi.allowed_peers, on_reject=lambda why: metrics.agi_rejected.inc())
        calls = AgiCalls(config, app[DB], app[TTS], metrics, app[READ], ami=app.get(AMI_CLIENT))
        calls.add_routes(server)
        app[AGI_SERVER] = server
        app[AGI_CALLS] = calls
        app[READINESS]["agi"] = lambda: (server.server is not None and server.server.is_serving(),
                                         "the FastAGI server is not listening")
        await server.start()
        calls.start()
        try:
            yield
        finally:
            await server.close()
            await calls.close()

    return ctx


def notify_context(config: Config):
    """Notification calls: AMI dials, the FastAGI route ``notification`` talks."""

    async def ctx(app: web.Application):
        service = NotificationService(config, app[DB], app[AMI_CLIENT], app[TTS], app[METRICS])
        app[AGI_SERVER].add_route(NOTIFY_ROUTE, service.agi_route)
        app[NOTIFIER] = service
        await service.start()
        try:
            yield
        finally:
            await service.close()

    return ctx


def build_app(config: Config, db=None, *, api: bool = True, calls: bool = True) -> web.Application:
    """What ``hotline serve`` runs: the REST API and/or the call services, sharing one database pool,
    one synthesizer and one metrics registry. ``controller.ari`` false leaves the ARI controller out
    (dialplan-first installations: the dialplan's FastAGI routes run the policies).

    ``db``: an already open database (tests); otherwise opened from the configuration.
    """
    app = create_app(config, db, api=api)
    if calls:
        app.cleanup_ctx.append(tts_context(config))
        if config.controller.ari:
            app.cleanup_ctx.append(ari_context(config))
        app.cleanup_ctx.append(ami_context(config))
        app.cleanup_ctx.append(agi_context(config))
        app.cleanup_ctx.append(notify_context(config))
        add_metrics_routes(app)
    return app


async def serve(config: Config, api: bool = True, calls: bool = True) -> None:
    """Run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(config, api=api, calls=calls)
    runner = web.AppRunner(app, access_log=None)
    try:
        # Inside the try: a context that fails at start-up must still close the ones before it
        # (an open database pool would keep the process from exiting).
        await runner.setup()
        site = web.TCPSite(runner, config.api.host, config.api.port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {config.api.host}:{config.api.port}: {exc.strerror} "
                               "(set api.port or HOTLINE_API_PORT)") from None
        parts = [p for p, on in (("REST API", api), ("call controller", calls)) if on]
        log.info("Hotline serving %s on http://%s:%s", " and ".join(parts), config.api.host, config.api.port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


# -- the two commands that need the API --------------------------------------------------------


def cmd_serve(config: Config, args) -> int:
    if args.api_only and args.controller_only:
        raise CommandError("--api-only and --controller-only exclude each other")
    try:
        asyncio.run(serve(config, api=not args.controller_only, calls=not args.api_only))
    except (RuntimeError, TTSError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_sync(config: Config, args) -> int:
    from pathlib import Path

    from api import sync

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None

    async def go(db):
        await _require_migrated(db)
        return await db.run(lambda: sync.apply(text, str(path), default_region=config.sip.default_region,
                                               dry_run=args.dry_run, project=args.project))

    try:
        result = _run_db(config, go)
    except sync.SyncError as exc:
        raise CommandError(f"{path} was not applied (nothing changed):\n" + "\n".join(exc.problems)) from None
    for line in result.changes:
        print(line)
    if not result.changes:
        print("no changes: the project matches the file")
    elif args.dry_run:
        print(f"dry run: {len(result.changes)} change(s) would be made (nothing was changed)")
    else:
        print(f"applied {len(result.changes)} change(s) to project {result.project_id}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="make a project match a YAML file (users, numbers, teams, schedules, "
                                    "policies, rules)")
    p.add_argument("file", metavar="FILE.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the differences, change nothing")
    p.add_argument("--project", help="project id or name (instead of the file's project:)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("serve", help="run the REST API and the call controller")
    p.add_argument("--api-only", action="store_true", help="run only the REST API")
    p.add_argument("--controller-only", action="store_true", help="run only the call services (ARI controller, "
                                                                  "AMI, FastAGI, notification calls)")
    p.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extra_commands=(add_cli,))


if __name__ == "__main__":
    sys.exit(main())
