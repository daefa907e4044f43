"""Shared fixtures: real Postgres and Redis, one schema and one key prefix per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from nome_api.app import create_app
from nome_api.keyring import new_secret
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.storage.store import EventStore
from nome_core.tenants.state import tenant_id_for

PG_URL = os.environ.get("NOME_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings for one test: its own Postgres schema and Redis key prefix, cleaned after."""
    schema = unique("t")
    prefix = f"{schema}:"
    yield Settings(
        database_url=PG_URL,
        database_schema=schema,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        log_level="warning",
        secret_key=new_secret(),
    )
    cleanup(schema, prefix)


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


@pytest.fixture
def memory_settings(tmp_path: object) -> Settings:
    """The embedded default (SQLite + in-process Redis), as `make run` uses."""
    return Settings(
        database_url=f"sqlite:///{tmp_path}/events.db",
        redis_url=f"memory://{uuid.uuid4().hex}",
        log_level="warning",
    )


class Api:
    """A running app with helpers to mint keys for tenants."""

    def __init__(self, client: object, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    async def key(self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",)) -> str:
        app = self.runtime.app
        tenant_id = tenant_id_for(tenant)
        if app.tenants.named(tenant) is None:
            await app.tenants.create(tenant)
        outcome, raw = await app.keys.create(
            Actor(tenant_id), f"{tenant}-{'-'.join(roles)}", list(roles)
        )
        assert outcome.position is not None
        await self.settle(outcome.position)
        return raw

    async def platform_key(self) -> str:
        """A key of the deployment's operator (role `platform`)."""
        outcome, raw = await self.runtime.app.keys.create_platform("test platform")
        assert outcome.position is not None
        await self.settle(outcome.position)
        return raw

    async def settle(self, position: int | None = None) -> None:
        """Wait until the read models have processed `position` (default: the head).

        Polls with the sync client: the app's asyncio Redis client belongs to the test
        client's event loop, not the test's.
        """
        runner = self.runtime.runner
        target = position if position is not None else self.runtime.store.head()
        names = [p.name for p in self.runtime.read_models.all]
        for _ in range(1000):
            if min(runner.positions(names).values()) >= target:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"read models did not reach {target}")


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    from litestar.testing import AsyncTestClient

    runtime = Runtime(settings)
    app = create_app(runtime=runtime)
    async with AsyncTestClient(app=app) as client:
        yield Api(client, runtime)


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}
