"""The migrations build exactly the schema the models describe, on both backends; the data
migrations move what they must."""

import datetime as dt
import os
import secrets
import uuid

import pytest
from peewee import CharField, DateTimeField, IntegerField, Model, PostgresqlDatabase, UUIDField
from playhouse.db_url import parse
from playhouse.migrations import Runner
from playhouse.schema_diff import diff_models

from ivr.store import models as m
from ivr.store import verification
from ivr.store.db import MIGRATIONS_DIR, migrate, open_database, pending_migrations
from ivr.store.models import MODELS
from tests.conftest import POSTGRES_ADMIN_URL, _psql


async def test_migrated_schema_matches_the_models(database_url):
    db = open_database(database_url, pool_size=1)
    try:
        assert await pending_migrations(db) == []
        assert await migrate(db) == []  # idempotent
        if database_url.startswith("sqlite"):
            diff = await db.run(diff_models, db, list(MODELS))
        else:
            # peewee's PostgreSQL introspection passes a "char" parameter asyncpg rejects: use psycopg2.
            sync = PostgresqlDatabase(**parse(database_url))
            with sync:
                diff = diff_models(sync, list(MODELS))
        assert not diff, f"models and migrations disagree; add a migration:\n{diff}"
    finally:
        await db.close_pool()


# -- 0005: the counts of wrong codes move to a guard per destination ------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """A database of each backend with no migration applied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"hotline_mig_{os.getpid()}_{secrets.token_hex(4)}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _verification_0003(db):
    """The verification table as 0003 made it (with the counts), to write the rows of an older install."""

    class Verification(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name="_id")
        createdAt = DateTimeField(default=m.utcnow)
        updatedAt = DateTimeField(default=m.utcnow)
        userIncomingCallNumber = UUIDField(column_name="userIncomingCallNumberId")
        codeHash = CharField(max_length=64)
        codeSalt = CharField(max_length=32)
        undeliveredCode = CharField(null=True, max_length=16)
        attempts = IntegerField(default=0)
        lockedAt = DateTimeField(null=True)
        expiresAt = DateTimeField()

        class Meta:
            database = db
            table_name = "user_incoming_call_number_verification"

    return Verification


def _user_0003(db):
    """The user table as 0003 made it (before the agent fields of 0006)."""

    class User(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name="_id")
        createdAt = DateTimeField(default=m.utcnow)
        updatedAt = DateTimeField(default=m.utcnow)
        project = UUIDField(column_name="projectId")
        name = CharField(max_length=200)
        timeZone = CharField(max_length=64, default="UTC")

        class Meta:
            database = db
            table_name = "user"

    return User


async def test_0005_carries_locks_over_per_destination_and_expires_codes_spoken_by_the_synthesizer(
        empty_database_url):
    db = open_database(empty_database_url, pool_size=1)
    runner = Runner(db, str(MIGRATIONS_DIR))
    try:
        await db.run(runner.up, "0003_on_call_schedules")
        Verification = _verification_0003(db)
        locked_at = dt.datetime(2024, 5, 1, 12, 0, 0)

        def older_install():
            project = m.Project.create(name="before 0005")
            user = _user_0003(db).create(project=project.id, name="Ana")
            rows = {}
            for name, address, attempts, locked in [
                    ("spelled", "sip:Ana@PBX.example:5060", 3, None),          # one destination, two rows:
                    ("locked", "sip:ana@pbx.example;transport=tcp", 5, locked_at),  # merged, locked
                    ("fresh", "+14155550100", 0, None),                      # nothing to carry over
                    ("tried", "+14155550199", 2, None)]:
                field = "sipUri" if address.startswith("sip") else "phoneNumber"
                number = m.UserIncomingCallNumber.create(project=project, user=user, **{field: address})
                Verification.create(userIncomingCallNumber=number.id, codeHash="0" * 64, codeSalt="0" * 32,
                                    undeliveredCode=None if locked else "123456", attempts=attempts,
                                    lockedAt=locked, expiresAt=m.utcnow() + dt.timedelta(hours=20))
                rows[name] = number
            return project, rows

        project, rows = await db.run(older_install)
        await migrate(db)

        def after():
            G, V = m.VerificationGuard, m.UserIncomingCallNumberVerification
            guards = {g.destination: (g.attempts, g.lockedAt) for g in G.select().where(G.project == project.id)}
            codes = [(v.undeliveredCode, v.expiresAt <= m.utcnow()) for v in V.select()]
            return guards, codes, [verification.pending_code(number).reason for number in rows.values()]

        guards, codes, reasons = await db.run(after)
        assert guards == {"sip:ana@pbx.example": (5, locked_at), "+14155550199": (2, None)}
        assert codes == [(None, True)] * 4            # spoken through the synthesizer before: expired
        assert reasons[0].startswith("it is locked") and reasons[1].startswith("it is locked")
        assert reasons[2:] == ["its code expired: re-send one"] * 2
        # And back: the counts return to the rows.
        # (every later migration first, newest first: each one's down must work on this data too)
        names = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9]*.py"))
        assert await db.run(runner.down, "0005_verification_guard") == [
            name for name in reversed(names) if name >= "0005_verification_guard"]
        counts = await db.run(lambda: sorted((v.attempts, v.lockedAt is not None) for v in Verification.select()))
        assert counts == [(0, False), (2, False), (5, True), (5, True)]
    finally:
        await db.close_pool()
