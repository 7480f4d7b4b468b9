"""The composition root: the one module that puts the REST API (``api``) and the call services
(``ivr.shells``) together. Nothing else imports both (``make test`` checks it with import-linter).

:func:`build_app` makes the application ``hotline serve`` runs, and the end-to-end tests run the
same; :func:`main` is the ``hotline`` command (the CLI of ``ivr.cli`` plus ``serve`` and ``sync``,
the two commands that need the API's resources).

One aiohttp cleanup context per resource, started in dependency order and closed in reverse: the
database, the speech synthesizer, the ARI controller, the AMI connection, the FastAGI server (the
escalation routes), the notification calls (AMI to dial, FastAGI to talk), the scheduled calls of the
calls API (fired at their time).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import aiohttp

from aiohttp import web

from api.app import create_app
from ivr import cli
from ivr.asterisk.agi import AgiServer
from ivr.asterisk.ami import AmiClient
from ivr.asterisk.ari import AriClient
from ivr.cli.commands import _require_migrated, _run_db
from ivr.config import Config, connect_host, private_dir
from ivr.errors import CommandError
from ivr.runtime import DB, METRICS, READ, READINESS, TTS, Tasks, add_metrics_routes, tts_context
from ivr.shells.ari import Controller
from ivr.shells.cc_inbound import InboundCalls
from ivr.shells.contact_center import ContactCenterService
from ivr.shells.fastagi import AgiCalls
from ivr.shells.notify import ROUTE as NOTIFY_ROUTE
from ivr.shells.notify import NotificationService
from ivr.shells.scheduler import ScheduledCallsService
from ivr.shells.twilio.clients import TwilioClients
from ivr.shells.twilio.notify import TwilioNotifier
from ivr.shells.twilio.voice import TwilioCalls
from ivr.tts import TTSError

log = logging.getLogger(__name__)

CONTROLLER = web.AppKey("controller", Controller)
CONTACT_CENTER = web.AppKey("contact_center", ContactCenterService)
AMI_CLIENT = web.AppKey("ami_client", AmiClient)
AGI_SERVER = web.AppKey("agi_server", AgiServer)
AGI_CALLS = web.AppKey("agi_calls", AgiCalls)
NOTIFIER = web.AppKey("notifier", NotificationService)
SCHEDULER = web.AppKey("scheduler", ScheduledCallsService)
TWILIO_CALLS = web.AppKey("twilio_calls", TwilioCalls)


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
        contact_center = ContactCenterService(config, app[DB], controller)
        InboundCalls(contact_center)  # calls to the IVR menus' numbers
        app[CONTROLLER] = controller
        app[CONTACT_CENTER] = contact_center
        app[READINESS]["ari"] = lambda: (ari.connected.is_set(), "not connected to ARI")
        task = asyncio.get_running_loop().create_task(controller.run())
        await contact_center.start()
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await contact_center.close()
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


def scheduler_context(config: Config):
    """Scheduled calls of the calls API, fired at their time (the database only: with or without Asterisk)."""

    async def ctx(app: web.Application):
        service = ScheduledCallsService(config, app[DB])
        app[SCHEDULER] = service
        await service.start()
        try:
            yield
        finally:
            await service.close()

    return ctx


def twilio_context(calls: TwilioCalls, notifier: TwilioNotifier, clients: TwilioClients):
    """Twilio's webhooks (their routes are mounted by build_app: a started app's are frozen): the
    policies' calls, and the notification calls of the projects that use Twilio."""

    async def ctx(app: web.Application):
        clients.bind(app[DB])
        calls.bind(app[DB], app[READ], app[METRICS])
        notifier.bind(app[DB])
        app[NOTIFIER].through_twilio = notifier.place_if_twilio
        try:
            yield
        finally:
            app[NOTIFIER].through_twilio = None
            await calls.close()
            await clients.close()

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
        app.cleanup_ctx.append(scheduler_context(config))
        clients = TwilioClients(config)
        twilio = TwilioCalls(config, tokens_for=clients.tokens_for, rest_for=clients.for_account)
        notifier = TwilioNotifier(config, twilio.auth, clients)
        app[TWILIO_CALLS] = twilio
        app.router.add_routes(twilio.routes() + notifier.routes())
        app.cleanup_ctx.append(twilio_context(twilio, notifier, clients))
        add_metrics_routes(app)
    return app


class CallServicesFailed(RuntimeError):
    """The call services' process exited while starting; ``status`` is its exit status (2: their
    configuration is wrong, as `hotline` says of its own)."""

    def __init__(self, status: int):
        super().__init__(f"the call services did not start (exit status {status}; their error is above)")
        self.status = status


class CallServicesProcess:
    """The call services (ARI controller, AMI, FastAGI, notification calls, scheduled calls) in a process
    of their own, beside the API: no API request, however slow, can delay a call (they share no event
    loop and no GIL). Started as ``hotline serve --controller-only`` with its HTTP server (health, readiness,
    /metrics, /api/controller/stats) on ``controller.host:controller.port``; restarted when it exits
    (its calls are resumed: the ARI controller takes over calls still in Asterisk); stopped by its
    pid, and told to stop if this process dies (PR_SET_PDEATHSIG).

    They are forked by a thread of their own, the *spawner*, which keeps the priority this process
    started with when the API lowers its own (api.nice): a restarted child must not inherit the API's
    (Linux keeps a nice value per thread; a child gets its forking thread's).
    """

    START_TIMEOUT = 60.0
    STOP_TIMEOUT = 20.0
    PROBE_EVERY = 2.0

    def __init__(self, config: Config, config_file: str | None = None):
        self.config = config
        self.config_file = config_file
        self.proc: subprocess.Popen | None = None
        self.state: tuple[bool, str] = (False, "the call services are starting")
        self.tasks = Tasks("call services supervisor")
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        # One thread, alive as long as this object: PR_SET_PDEATHSIG fires when the forking *thread* ends.
        self._spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-services-spawner")
        self.spawner_thread_id: int = self._spawner.submit(threading.get_native_id).result()

    @property
    def base_url(self) -> str:
        return f"http://{connect_host(self.config.controller.host)}:{self.config.controller.port}"

    def probe(self) -> tuple[bool, str]:
        return self.state

    async def forward_twilio(self, request: web.Request) -> web.Response:
        """Twilio's webhooks reach the API's port (one public address); the calls they drive live in
        the call services' process: pass them on as they came (the signature is checked there)."""
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() in FORWARDED_TWILIO_HEADERS}
        try:
            async with self._session.post(self.base_url + request.path_qs, data=await request.read(),
                                          headers=headers, timeout=aiohttp.ClientTimeout(total=14)) as resp:
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type if resp.status != 204 else None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.error("cannot pass a Twilio webhook (%s) on to the call services: %s", request.path,
                      exc or type(exc).__name__)
            return web.Response(status=503, text="the call services do not answer\n")

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        await self._spawn()
        self.tasks.spawn(self._supervise())
        self.tasks.spawn(self._watch())

    async def _spawn(self) -> None:
        argv = [sys.executable, "-m", "ivr.main", *(["--config", self.config_file] if self.config_file else []),
                "serve", "--controller-only"]
        env = {**os.environ, "HOTLINE_API_HOST": self.config.controller.host,
               "HOTLINE_API_PORT": str(self.config.controller.port)}
        self.proc = await asyncio.get_running_loop().run_in_executor(self._spawner, functools.partial(
            subprocess.Popen, argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent))
        deadline = time.monotonic() + self.START_TIMEOUT
        while not await self._answers("/api/health"):
            if self.proc.poll() is not None:
                raise CallServicesFailed(self.proc.returncode)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the call services did not answer on {self.base_url} within "
                                   f"{self.START_TIMEOUT:.0f} s (controller.port)")
            await asyncio.sleep(0.1)
        log.info("call services running as pid %s, on %s", self.proc.pid, self.base_url)

    async def _answers(self, path: str) -> dict | None:
        try:
            async with self._session.get(self.base_url + path) as resp:
                body = await resp.json(content_type=None)
                return body if resp.status == 200 or path == "/api/ready" else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return None

    async def _supervise(self) -> None:
        delay = 1.0
        while True:
            status = await asyncio.to_thread(self.proc.wait)
            if self._stopping:
                return
            self.state = (False, f"the call services exited (status {status}); restarting them")
            log.error("the call services (pid %s) exited with status %s; restarting them in %.0f s",
                      self.proc.pid, status, delay)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                delay = 1.0
            except RuntimeError as exc:
                log.error("%s", exc)
                delay = min(delay * 2, 30.0)

    async def _watch(self) -> None:
        """Keep ``state`` (the API's readiness check "calls") current from their own readiness."""
        while True:
            body = await self._answers("/api/ready")
            if body is None:
                self.state = (False, f"the call services do not answer on {self.base_url}")
            else:
                failing = [name for name, check in (body.get("checks") or {}).items() if not check.get("ok")]
                self.state = (not failing, "not ready: " + ", ".join(failing))
            await asyncio.sleep(self.PROBE_EVERY)

    async def stop(self) -> None:
        self._stopping = True
        await self.tasks.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("the call services (pid %s) did not stop within %.0f s: killing them", self.proc.pid,
                          self.STOP_TIMEOUT)
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self._session is not None:
            await self._session.close()
        self._spawner.shutdown(wait=False)


#: What a Twilio webhook carries that the call services need: its body's type, its signature, and the
#: proxy's headers (read only with twilio.trust_forwarded_headers).
FORWARDED_TWILIO_HEADERS = frozenset({"content-type", "x-twilio-signature", "x-forwarded-proto", "x-forwarded-host",
                                      "i-twilio-idempotency-token"})


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, so no call service outlives ``serve``."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def lower_priority(increment: int, keep: tuple[int, ...] = ()) -> None:
    """Lower every thread of this process but ``keep`` by ``increment`` nice levels (Linux keeps a nice
    value per thread, and a thread started later inherits its creator's)."""
    if increment <= 0:
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task") if int(tid) not in keep]
    except OSError:
        threads = [0]  # not Linux: the process
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
        except OSError as exc:  # a thread that ended meanwhile; never a reason not to serve
            log.debug("cannot lower the priority of thread %s: %s", tid, exc)
    log.info("the API runs %d nice levels below the call services (api.nice)", increment)


async def serve(config: Config, api: bool = True, calls: bool = True, config_file: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. The API and the call services both: in two processes (this one the
    API, a child the call services); one of them: in this process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    private_dir(config.data_dir)
    child = CallServicesProcess(config, config_file) if api and calls else None
    app = build_app(config, api=api, calls=calls and child is None)
    if child is not None:
        app.router.add_post("/twilio/{tail:.*}", child.forward_twilio)
    runner = web.AppRunner(app, access_log=None)
    try:
        if child is not None:
            await child.start()  # first: a call service that cannot start fails `serve` at once
            app[READINESS]["calls"] = child.probe
        if api:  # the call services, if any, run in the child, forked by a thread that keeps its priority
            lower_priority(config.api.nice, keep=(child.spawner_thread_id,) if child is not None else ())
        # Inside the try: a context that fails at start-up must still close the ones before it
        # (an open database pool would keep the process from exiting).
        await runner.setup()
        site = web.TCPSite(runner, config.api.host, config.api.port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {config.api.host}:{config.api.port}: {exc.strerror} "
                               "(set api.port or HOTLINE_API_PORT)") from None
        parts = [p for p, on in (("REST API", api), ("call services", calls and child is None)) if on]
        log.info("Hotline serving %s on http://%s:%s", " and ".join(parts), config.api.host, config.api.port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        if child is not None:
            await child.stop()


# -- the two commands that need the API --------------------------------------------------------


def cmd_serve(config: Config, args) -> int:
    if args.api_only and args.controller_only:
        raise CommandError("--api-only and --controller-only exclude each other")
    try:
        asyncio.run(serve(config, api=not args.controller_only, calls=not args.api_only, config_file=args.config))
    except CallServicesFailed as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2 if exc.status == 2 else 1
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
                                               dry_run=args.dry_run, project=args.project,
                                               allowed_sip_hosts=tuple(config.sip.allowed_hosts),
                                               codes_per_day=config.notify.verification_codes_per_day))

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
                                                                  "AMI, FastAGI, notification calls, scheduled calls)")
    p.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extra_commands=(add_cli,))


if __name__ == "__main__":
    sys.exit(main())
