"""Batched document reads on a real Redis: every waiter gets its own key's value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from nome_api.batching import GetBatcher
from tests.support.env import REDIS_URL, unique


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(REDIS_URL)
    yield connection
    await connection.aclose()


async def test_concurrent_reads_share_one_mget_and_each_gets_its_own_value(
    client: redis.asyncio.Redis,
) -> None:
    prefix = unique("t_batch")
    await client.mset({f"{prefix}:{i}": f"value {i}".encode() for i in range(50)})
    sent: list[list[str]] = []
    mget = client.mget

    async def counting_mget(keys: list[str]) -> list[bytes | None]:
        sent.append(keys)
        return await mget(keys)  # type: ignore[no-any-return]

    client.mget = counting_mget  # type: ignore[method-assign]
    batcher = GetBatcher(client)
    try:
        wanted = [f"{prefix}:{i}" for i in range(60)]  # the last ten do not exist
        got = await asyncio.gather(*(batcher.get(key) for key in wanted))
        alone = await batcher.get(f"{prefix}:7")
    finally:
        await client.delete(*[f"{prefix}:{i}" for i in range(50)])

    assert got == [f"value {i}".encode() for i in range(50)] + [None] * 10
    assert alone == b"value 7"
    assert [len(keys) for keys in sent] == [60, 1]


async def test_a_failed_mget_fails_every_read_of_its_batch_and_the_next_batch_works(
    client: redis.asyncio.Redis,
) -> None:
    prefix = unique("t_batch")
    await client.set(f"{prefix}:a", b"A")
    mget = client.mget
    calls = 0

    async def flaky_mget(keys: list[str]) -> list[bytes | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise redis.ConnectionError("connection reset")
        return await mget(keys)  # type: ignore[no-any-return]

    client.mget = flaky_mget  # type: ignore[method-assign]
    batcher = GetBatcher(client)
    try:
        failed = await asyncio.gather(
            batcher.get(f"{prefix}:a"), batcher.get(f"{prefix}:b"), return_exceptions=True
        )
        after = await batcher.get(f"{prefix}:a")
    finally:
        await client.delete(f"{prefix}:a")

    assert [type(outcome) for outcome in failed] == [redis.ConnectionError] * 2
    assert after == b"A"


async def test_a_reader_that_gave_up_does_not_disturb_the_others(
    client: redis.asyncio.Redis,
) -> None:
    prefix = unique("t_batch")
    await client.set(f"{prefix}:a", b"A")
    batcher = GetBatcher(client)
    try:
        gone = batcher.get(f"{prefix}:a")
        kept = batcher.get(f"{prefix}:a")
        gone.cancel()
        assert await kept == b"A"
    finally:
        await client.delete(f"{prefix}:a")
    assert gone.cancelled()
