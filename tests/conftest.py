"""Shared fixtures: real Postgres and Redis, one schema and one key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from nome_api.app import create_app
from nome_api.keyring import new_secret
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from tests.support.api import Api
from tests.support.env import PG_URL, REDIS_URL, cleanup, unique


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


@pytest.fixture
def memory_settings(tmp_path: object) -> Settings:
    """The embedded default (SQLite + in-process Redis), as `make run` uses."""
    return Settings(
        database_url=f"sqlite:///{tmp_path}/events.db",
        redis_url=f"memory://{uuid.uuid4().hex}",
        log_level="warning",
    )


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    from litestar.testing import AsyncTestClient

    runtime = Runtime(settings)
    app = create_app(runtime=runtime)
    async with AsyncTestClient(app=app) as client:
        yield Api(client, runtime)
