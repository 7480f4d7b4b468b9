"""Fixtures shared by every layer: databases (SQLite and the machine's PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import secrets

import pytest

from ivr.store.db import migrate, run_sync

POSTGRES_ADMIN_URL = os.environ.get("HOTLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _psql(sql: str) -> None:
    """Create or drop a test database through asyncpg (no psql binary needed)."""
    import asyncio

    import asyncpg

    async def go():
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def own_postgres_database(prefix: str):
    """A migrated PostgreSQL database no other test uses (its URL), dropped after."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _psql(f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        run_sync(url, migrate)
        yield url
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory):
    """A migrated, empty database of each backend, shared by the tests of a session.

    Tests stay independent by working in projects of their own (the API never
    crosses projects), so the database is not reset between them.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'hotline.db'}"
        run_sync(url, migrate)
        yield url
        return
    with own_postgres_database("hotline_test") as url:
        yield url
