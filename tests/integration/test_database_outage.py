"""With PostgreSQL refusing connections or stalled, commands and log reads answer 503
`unavailable` with Retry-After within seconds, reads from Redis keep answering, and the
first command after the database is back succeeds (issue 10, item 2).

The database goes away behind a TCP proxy (tests/support/tcp_proxy.py). The bounds below
are safety limits for a test that would otherwise hang, not timings asserted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from nome_api.app import create_app
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from nome_core.storage.store import EventStore
from tests.support.api import Api, auth
from tests.support.env import PG_URL
from tests.support.tcp_proxy import Proxy

# A command or read may take this long to fail before the test calls it hung.
HANG = 20.0


@pytest.fixture
async def behind_proxy(settings: Settings) -> AsyncIterator[tuple[Api, Proxy]]:
    EventStore(PG_URL, schema=settings.database_schema).close()  # tables, straight to PG
    proxy = Proxy(("127.0.0.1", 5432))
    through = msgspec.structs.replace(settings, database_url=proxy.url, migrate=False)
    runtime = Runtime(through)
    try:
        async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
            yield Api(client, runtime), proxy
    finally:
        proxy.close()


async def answered(request: object) -> httpx.Response:
    return await asyncio.wait_for(request, HANG)  # type: ignore[arg-type]


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
    assert response.headers["retry-after"]


@pytest.mark.parametrize("outage", ["refuse", "stall"])
async def test_an_outage_is_a_fast_503_for_commands_and_log_reads_and_reads_go_on(
    behind_proxy: tuple[Api, Proxy], outage: str
) -> None:
    api, proxy = behind_proxy
    key = await api.key()
    thread = (await api.client.post("/v1/threads", json={}, headers=auth(key))).json()
    chat = await api.client.post("/v1/chat", json={"input": "hi"}, headers=auth(key))
    run_id = chat.json()["run"]["id"]
    await api.settle()

    getattr(proxy, outage)()

    assert_unavailable(
        await answered(api.client.post("/v1/threads", json={"title": "x"}, headers=auth(key)))
    )
    assert_unavailable(
        await answered(api.client.get(f"/v1/runs/{run_id}/events", headers=auth(key)))
    )
    assert_unavailable(
        await answered(api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key)))
    )
    got = await answered(api.client.get(f"/v1/threads/{thread['id']}", headers=auth(key)))
    assert got.status_code == 200
    listed = await answered(api.client.get("/v1/runs", headers=auth(key)))
    assert listed.status_code == 200 and listed.json()["total_count"] == 1
    health = await answered(api.client.get("/v1/health"))
    assert health.status_code == 503

    proxy.restore()

    first = await answered(
        api.client.post("/v1/threads", json={"title": "back"}, headers=auth(key))
    )
    assert first.status_code == 201, first.text
