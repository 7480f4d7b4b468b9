"""Writes at the same moment: each waits its turn for the write lock, none fails.

On SQLite a transaction that reads before it writes (every update checks its row first) and only
then asks for the write lock cannot wait for it: SQLite answers "database is locked" at once. The
API's write transactions therefore take the lock when they begin (``BEGIN IMMEDIATE``) and wait up
to busy_timeout for it.
"""

from __future__ import annotations

import asyncio

import pytest

from api.app import create_app
from tests.api.conftest import ApiClient
from ivr.store.db import open_database

PARALLEL = 40


@pytest.fixture
async def busy_api(database_url, config, aiohttp_client):
    """The API with the production pool (8 connections): several writers really run at once."""
    db = open_database(database_url)
    client = await aiohttp_client(create_app(config, db=db))
    try:
        yield ApiClient(client, db)
    finally:
        await client.close()
        await db.close_pool()


async def test_parallel_updates_and_creates_all_succeed(busy_api):
    api = busy_api
    acme = await api.tenant("Acme", roles=("owner",))
    ids = [(await api.create("incoming-call-policy", acme.owner, {"name": f"Policy {i}"}))["_id"]
           for i in range(PARALLEL)]

    async def update(i: int, policy_id: str):
        return await api.call("PUT", f"/api/incoming-call-policy/{policy_id}", acme.owner,
                              {"data": {"name": f"Renamed {i}", "description": f"changed {i}"}}, expect=None)

    async def create(i: int):
        return await api.call("POST", "/api/incoming-call-policy", acme.owner,
                              {"data": {"name": f"New {i}"}}, expect=None)

    answers = await asyncio.gather(*[update(i, policy_id) for i, policy_id in enumerate(ids)],
                                   *[create(i) for i in range(PARALLEL)])
    failed = [(status, body) for status, body in answers if status != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} writes failed, e.g. {failed[0]}"

    listed = await api.post("/api/incoming-call-policy/get-list", acme.owner,
                            {"select": {"name": True, "description": True}, "sort": {"name": 1}},
                            params={"limit": "100"})
    names = {row["name"]: row.get("description") for row in listed["data"]}
    assert listed["count"] == 2 * PARALLEL
    assert all(names[f"Renamed {i}"] == f"changed {i}" for i in range(PARALLEL))
    assert all(f"New {i}" in names for i in range(PARALLEL))


async def test_a_lock_held_past_busy_timeout_is_a_503(tmp_path, config, aiohttp_client, monkeypatch):
    """SQLite only (PostgreSQL has no database-wide write lock): a database file of its own."""
    import sqlite3

    from ivr.store import db as store_db

    database_url = f"sqlite:///{tmp_path / 'locked.db'}"
    monkeypatch.setattr(store_db, "SQLITE_PRAGMAS", (*store_db.SQLITE_PRAGMAS[:-1], ("busy_timeout", 200)))
    db = open_database(database_url)
    await store_db.migrate(db)
    await db.aclose()
    client = await aiohttp_client(create_app(config, db=db))
    api = ApiClient(client, db)
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        acme = await api.tenant("Acme", roles=("owner",))
        holder.execute("BEGIN IMMEDIATE")  # another process writing for longer than busy_timeout
        status, body = await api.call("POST", "/api/incoming-call-policy", acme.owner,
                                      {"data": {"name": "Waits"}}, expect=None)
        assert status == 503, body
        assert "busy" in body["error"]
    finally:
        holder.close()
        await client.close()
        await db.close_pool()


async def test_concurrent_defaults_and_routing_numbers_keep_their_rules(busy_api):
    """Rules across rows hold under concurrent writers: at most one default outbound number, and a
    routing number given to a menu and a policy at once goes to exactly one of them."""
    from tests.api.factories import unique_phone

    api = busy_api
    acme = await api.tenant("Acme", roles=("owner",))
    answers = await asyncio.gather(*[
        api.call("POST", "/api/outbound-phone-number", acme.owner,
                 {"data": {"phoneNumber": unique_phone(), "isDefault": True}}, expect=None) for _ in range(12)])
    assert [status for status, _ in answers] == [200] * 12, answers
    defaults = await api.post("/api/outbound-phone-number/count", acme.owner, {"query": {"isDefault": True}})
    assert defaults == {"count": 1}
    for _ in range(3):
        number = unique_phone()
        answers = await asyncio.gather(*[
            api.call("POST", f"/api/{path}", acme.owner, {"data": {"name": f"{path} {i}", "routingPhoneNumber": number}},
                     expect=None)
            for i in range(4) for path in ("call-menu", "incoming-call-policy")])
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] + [409] * 7, answers
