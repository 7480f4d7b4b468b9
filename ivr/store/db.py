"""Opening the database and migrating it.

One URL chooses the backend (``playhouse.db_url`` parses it): ``sqlite:///path``
(the default, WAL and foreign keys on) or ``postgresql://user:pass@host/db``.
Both are peewee's asyncio databases (``playhouse.pwasyncio``), so queries made
from the event loop never block it; synchronous callers (the CLI, migrations)
go through ``run_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

from peewee import PostgresqlDatabase, SqliteDatabase, Value
from playhouse import db_url
from playhouse.migrations import Runner
from playhouse.pwasyncio import AsyncPostgresqlDatabase, AsyncSqliteDatabase

from ivr.config import private_dir
from ivr.store.models import bound_database, database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"



class Writer:
    """Where the call shells' log writes run on SQLite: plain synchronous peewee on one thread of
    their own, with their own connection (``bound_database`` routes the models to it there).

    Through the asyncio database every statement costs three round trips to aiosqlite's thread (execute,
    fetch, close) and a greenlet switch each: measured here, about 1 ms of CPU per write, the largest
    part of a call's cost in the controller. Here a batch of writes costs one hop to the writer thread.
    Nothing waits on the event loop's thread: a write that must wait for SQLite's write lock (the
    API's process writing) waits in the writer thread, up to busy_timeout.
    """

    def __init__(self, path: str):
        self.path = path
        self._db: SqliteDatabase | None = None
        self._executor = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._db = SqliteDatabase(self.path, pragmas=SQLITE_PRAGMAS, timeout=10, check_same_thread=False)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="hotline-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, self._db, fn, args)

    @staticmethod
    def _call(db, fn, args):
        token = _reader.set(db)
        try:
            return fn(*args)
        finally:
            _reader.reset(token)

    def close(self) -> None:
        """Finish the queued writes and close the connection (``run`` opens them again)."""
        executor, db = self._executor, self._db
        self._executor = self._db = None
        if executor is not None:
            executor.submit(db.close)
            executor.shutdown(wait=True)


class HotlineSqliteDatabase(AsyncSqliteDatabase):
    """pwasyncio's SQLite database, with the shells' log writer (``writer``; None for ``:memory:``)."""

    writer: Writer | None = None

    async def close_pool(self):
        if self.writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
        await super().close_pool()


db_url.register_database(HotlineSqliteDatabase, "sqlite+async")
db_url.register_database(AsyncPostgresqlDatabase, "postgresql+async")

SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),      # readers never wait for the writer
    ("foreign_keys", 1),
    ("synchronous", "normal"),    # safe with WAL, much faster commits
    ("busy_timeout", 10000),
)

T = TypeVar("T")


class DatabaseConfigError(Exception):
    pass


def open_database(url: str, pool_size: int = 8, *, bind_models: bool = True) -> AsyncSqliteDatabase | AsyncPostgresqlDatabase:
    """An asyncio database for ``url``, bound to the models (not yet connected)."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        db = db_url.connect(url.replace("sqlite://", "sqlite+async://", 1), pragmas=SQLITE_PRAGMAS,
                            pool_size=pool_size, timeout=10)
        if db.database != ":memory:":
            _private_file(Path(db.database))
            db.writer = Writer(db.database)
    elif scheme in ("postgresql", "postgres"):
        db = db_url.connect(url.replace(f"{scheme}://", "postgresql+async://", 1), pool_size=pool_size)
    else:
        raise DatabaseConfigError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///path/to/file.db "
            "or postgresql://user:password@host/dbname")
    if bind_models:  # a probe (hotline doctor) leaves the models on the database the process serves
        database.initialize(db)
    return db


def _private_file(path: Path) -> None:
    """The SQLite file readable by its owner only (0600), in a directory only its owner enters;
    SQLite gives its -wal and -shm files the database file's mode."""
    if not path.parent.exists():
        private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def write_transaction():
    """The one way a write transaction begins (nested, it is a savepoint of the outer one).

    On SQLite a transaction that reads before it writes asks for the write lock only at its first
    write, and SQLite cannot make it wait then (another writer may have changed what it read): it
    fails at once with "database is locked", whatever busy_timeout says. Taking the lock when the
    transaction begins (``BEGIN IMMEDIATE``) makes concurrent writers wait their turn, up to
    busy_timeout. PostgreSQL's row locks wait by themselves.
    """
    db = database.obj
    if isinstance(db, SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


def lock_wait_expired(exc: BaseException) -> bool:
    """Whether ``exc`` says SQLite's write lock was still taken when busy_timeout ran out."""
    exc = getattr(exc, "orig", exc)  # peewee's error keeps the driver's
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.OperationalError) else None
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY  # SQLITE_BUSY and its extended codes


_reader = bound_database  # the reader of Reads, or the connection of Writer's thread


def on_reader(query):
    """Bind a read query to the reader of the operation running now (see ``Reads``)."""
    reader = _reader.get()
    return query.bind(reader) if reader is not None else query


def reading_database():
    """The database a read of the operation running now goes to (the reader, else the models' database)."""
    return _reader.get() or database.obj


class Reads:
    """How read-only operations run.

    SQLite in WAL mode never makes a reader wait for a writer, so reads run as
    plain synchronous peewee on the event loop's thread: a 100-row page costs
    about a millisecond, a quarter of the same read through the asyncio bridge
    (a greenlet and a worker-thread hop per query). Writes, which can wait for
    the write lock, always go through the asyncio database. On PostgreSQL
    everything goes through the asyncio database (asyncpg).
    """

    def __init__(self, db, url: str):
        self.db = db
        self.sync = None
        if urlparse(url).scheme == "sqlite" and db.database != ":memory:":
            self.sync = SqliteDatabase(db.database, pragmas=(("query_only", 1), ("busy_timeout", 2000)),
                                       check_same_thread=False)

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if self.sync is None:
            return await run_and_release(self.db, fn, *args)
        token = _reader.set(self.sync)
        try:
            return fn(*args)
        finally:
            _reader.reset(token)

    @contextlib.asynccontextmanager
    async def session(self):
        """``(db, execute)``: ``await execute(statement, params)`` runs a compiled read (``Statement``) and
        returns its rows, on one connection for the block; ``db`` is the database it was compiled for.

        Straight to the driver: SQLite's reader connection, or asyncpg's own ``fetch`` on PostgreSQL
        (its prepared-statement cache: one round trip; peewee's bridge prepares every query again).
        """
        if self.sync is not None:
            conn = self.sync.connection()

            async def execute(statement: Statement, params: list) -> list:
                return conn.execute(statement.sql, params).fetchall()

            yield self.sync, execute
            return
        db = self.db
        wrapper = await db.aconnect()
        try:
            if isinstance(db, PostgresqlDatabase):
                async def execute(statement: Statement, params: list) -> list:
                    return await wrapper.conn.fetch(statement.dollar_sql, *params)
            else:  # an in-memory SQLite (tests): through the asyncio database
                async def execute(statement: Statement, params: list) -> list:
                    return (await db.aexecute_sql(statement.sql, params)).fetchall()
            yield db, execute
        finally:
            await db.aclose()

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()


class Slot:
    """Stands for the ``index``-th value of a statement compiled once (``Statement``)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def slot(index: int) -> Value:
    """The placeholder node of a ``Statement``'s ``index``-th value (bound as given: no converter)."""
    return Value(Slot(index), converter=False)


def dollar_placeholders(sql: str) -> str:
    """peewee's PostgreSQL SQL (``%s``, ``%%``) with asyncpg's placeholders (``$1``, ``$2``, ...)."""
    counter = iter(range(1, sql.count("%s") + 1))
    return re.sub("%%|%s", lambda match: "%" if match.group(0) == "%%" else f"${next(counter)}", sql)


class Statement:
    """A query whose SQL peewee generated once, to run again and again with other values.

    ``query`` selects with ``slot(i)`` nodes where values go; ``params(values)`` lists what a run binds,
    in the order of the SQL's placeholders. ``sql`` has the database's own placeholders (what
    ``execute_sql`` takes), ``dollar_sql`` asyncpg's (``Reads.session`` on PostgreSQL).
    """

    __slots__ = ("sql", "dollar_sql", "_plan", "_identity")

    def __init__(self, query, db):
        sql, params = query.bind(db).sql()
        self.sql = sql
        self.dollar_sql = dollar_placeholders(sql) if isinstance(db, PostgresqlDatabase) else sql
        self._plan = [(True, p.index) if isinstance(p, Slot) else (False, p) for p in params]
        # The common case: every value once, in order (no constant peewee put in the parameters).
        self._identity = [(True, i) for i in range(len(params))] == self._plan

    def params(self, values: list) -> list:
        if self._identity and len(values) == len(self._plan):
            return values
        return [values[x] if is_slot else x for is_slot, x in self._plan]


class Compiled:
    """A read query whose SQL peewee generates once per database, then runs with other values.

    For small queries peewee spends most of its time generating SQL. The few
    reads of a call's set-up run for every call, between the caller's INVITE
    and the first on-call INVITE, so they are built once: ``build`` receives a
    placeholder per value and returns the query; ``rows(*values)`` binds the
    values (converted by the matching ``fields``) and returns tuples converted
    by the selected columns.
    """

    class _Slot:
        def __init__(self, index: int):
            self.index = index

    def __init__(self, build: Callable[..., Any], *fields):
        self.build = build
        self.fields = fields
        self._compiled: dict[int, tuple] = {}

    def _compile(self, db) -> tuple:
        from peewee import Value

        slots = [self._Slot(i) for i in range(len(self.fields))]
        query = self.build(*[Value(slot, converter=False) for slot in slots]).bind(db)
        sql, params = query.sql()
        plan = [(True, p.index) if isinstance(p, self._Slot) else (False, p) for p in params]
        converters = [getattr(node, "python_value", None) for node in getattr(query, "_returning", None) or ()]
        compiled = (db, sql, plan, converters)
        self._compiled[id(db)] = compiled
        return compiled

    def _run(self, values):
        from ivr.store.models import database

        db = _reader.get() or database.obj
        compiled = self._compiled.get(id(db))
        if compiled is None or compiled[0] is not db:
            compiled = self._compile(db)
        _, sql, plan, converters = compiled
        converted = [field.db_value(value) for field, value in zip(self.fields, values)]
        params = [converted[x] if is_slot else x for is_slot, x in plan]
        return db.execute_sql(sql, params), converters

    def rows(self, *values) -> list[tuple]:
        cursor, converters = self._run(values)
        return [tuple(conv(v) if conv is not None and v is not None else v for conv, v in zip(converters, row))
                for row in cursor.fetchall()]

    def execute(self, *values) -> None:
        """Run a compiled write (an insert or an update)."""
        self._run(values)


async def run_and_release(db, fn: Callable[..., T], *args: Any) -> T:
    """``db.run(fn, *args)``, then give the connection back to the pool.

    pwasyncio ties a connection to the task that used it until the task ends:
    a long-lived task (a call, its log writer, the controller) would otherwise
    hold one for its whole life and a handful of calls would empty the pool.
    """
    try:
        return await db.run(fn, *args)
    finally:
        await db.aclose()


async def run_write(db, fn: Callable[..., T], *args: Any) -> T:
    """A write of the call shells, ``fn(*args)``: in the database's writer thread (SQLite, see
    ``Writer``), otherwise through the asyncio database (``run_and_release``)."""
    writer = getattr(db, "writer", None)
    if writer is None:
        return await run_and_release(db, fn, *args)
    return await writer.run(fn, *args)


async def migrate(db) -> list[str]:
    """Apply the pending migrations; returns their names."""
    runner = Runner(db, str(MIGRATIONS_DIR))
    return await db.run(runner.up)


async def migration_status(db) -> list[tuple[str, Any]]:
    runner = Runner(db, str(MIGRATIONS_DIR))
    rows = await db.run(runner.status)
    return [(m.name, m.applied) for m in rows]


async def pending_migrations(db) -> list[str]:
    return [name for name, applied in await migration_status(db) if applied is None]


def run_sync(url: str, fn: Callable[..., Any], *args: Any, pool_size: int = 2) -> Any:
    """Run ``fn(db, *args)`` (a coroutine function) to completion from synchronous code."""

    async def main():
        db = open_database(url, pool_size=pool_size)
        try:
            return await fn(db, *args)
        finally:
            await db.close_pool()

    return asyncio.run(main())

