"""What the parts of one Hotline process share: typed aiohttp ``AppKey``s and the contexts that fill them.

The REST API (``api``) and the call services (``ivr.shells``) never import each other; they meet
here, and in the database (the outbox, ivr/store/outbox.py, carries work from one to the other). The composition root (``ivr.main``) builds one application and puts in it:

* ``CONFIG``, ``DB`` and ``READ`` (the configuration, the asyncio database, the way reads run);
* ``METRICS`` (one Prometheus registry for the whole process, so ``/metrics`` shows everything);
* ``TTS`` (one speech synthesizer per process: one cache, one set of in-flight syntheses);
* ``READINESS`` (name -> a probe telling whether that part is connected, for ``/api/ready``).

:class:`Tasks` is the one way background work is owned: every long-lived task belongs to the
``Tasks`` of the service that started it, and is cancelled and awaited when that service closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from peewee import SqliteDatabase

from ivr.config import Config
from ivr.metrics import Metrics
from ivr.store.db import Reads, open_database, pending_migrations
from ivr.tts import Synthesizer, synthesizer_from_config

log = logging.getLogger(__name__)


#: A readiness probe: (connected, what is wrong when it is not).
Probe = Callable[[], tuple[bool, str]]

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", object)            # playhouse.pwasyncio's AsyncSqliteDatabase or AsyncPostgresqlDatabase
READ = web.AppKey("read", Reads)
METRICS = web.AppKey("metrics", Metrics)
TTS = web.AppKey("tts", Synthesizer)
READINESS = web.AppKey("readiness", dict[str, Probe])


class Tasks:
    """The background tasks of one service: started with :meth:`spawn`, ended by :meth:`close`.

    A task that fails is logged (never silently lost); ``close`` cancels what still runs and waits
    for it, so nothing outlives the service that owns it.
    """

    def __init__(self, owner: str):
        self.owner = owner
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a background task of the %s failed", self.owner, exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True as soon as ``stopping`` is set.

    A polling loop that reads the database ends between two reads when its service closes (it checks
    this), rather than being cancelled: a read cancelled inside pwasyncio's bridge can keep its pooled
    connection, and closing the pool then waits for it forever."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


def database_url_of(db) -> str:
    return f"sqlite:///{db.database}" if isinstance(db, SqliteDatabase) else "postgresql://"


def database_context(config: Config, db=None):
    """The database pool for the app's lifetime (``DB`` and ``READ``); refuses an unmigrated schema.

    ``db``: an already open database (tests); otherwise opened from the configuration and closed
    at cleanup (pwasyncio's worker connections would otherwise keep the process alive).
    """

    async def ctx(app: web.Application):
        own = db is None
        database = db if db is not None else open_database(config.database_url, config.database.pool_size)
        pending = await pending_migrations(database)
        # Give the startup task's connection back to the pool: that task lives as long as the
        # server, and would otherwise keep one connection (with pool_size 1: every one) forever.
        await database.aclose()
        if pending:
            if own:
                await database.close_pool()
            raise RuntimeError(f"the database has pending migrations ({', '.join(pending)}): "
                               "run `hotline migrate` first")
        app[DB] = database
        app[READ] = Reads(database, config.database_url if own else database_url_of(database))
        yield
        app[READ].close()
        if own:
            await database.close_pool()

    return ctx


def tts_context(config: Config):
    """The process's one speech synthesizer (``TTS``), checked at start-up: a missing tool fails
    ``hotline serve`` at once, not a call at 3 a.m."""

    async def ctx(app: web.Application):
        tts = synthesizer_from_config(config)
        tts.check()
        app[TTS] = tts
        yield

    return ctx


def new_app(config: Config, *, middlewares=(), client_max_size: int = 1024 * 1024) -> web.Application:
    """An application with the shared keys every part may rely on (``CONFIG``, ``METRICS``, ``READINESS``)."""
    app = web.Application(middlewares=list(middlewares), client_max_size=client_max_size)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[READINESS] = {}
    return app


async def metrics_handler(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = request.app[METRICS]
    probe = request.app[READINESS].get("ari")
    if probe is not None:
        metrics.ari_connected.set(1 if probe()[0] else 0)
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats_handler(request: web.Request) -> web.Response:
    probe = request.app[READINESS].get("ari")
    return web.json_response({**request.app[METRICS].stats(), "ari_connected": bool(probe and probe()[0])})


def add_metrics_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_handler, allow_head=False)
    app.router.add_get("/api/controller/stats", stats_handler, allow_head=False)
