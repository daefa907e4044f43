"""The test Postgres and Redis: where they are, names of one test's own, and cleaning up."""

from __future__ import annotations

import os
import uuid

import psycopg
import redis

from nome_core.storage.store import EventStore

PG_URL = os.environ.get("NOME_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def cleanup(schema: str, prefix: str) -> None:
    store = EventStore(PG_URL, schema=schema, create_table=False)
    try:
        store.drop()
    finally:
        store.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])
    client.close()


def schema_exists(schema: str) -> bool:
    with psycopg.connect(PG_URL) as db:
        found = db.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    return found is not None
