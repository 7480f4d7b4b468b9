"""The migrations build exactly the schema the models describe, on both backends."""

from peewee import PostgresqlDatabase
from playhouse.db_url import parse
from playhouse.schema_diff import diff_models

from ivr.store.db import migrate, open_database, pending_migrations
from ivr.store.models import MODELS


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
