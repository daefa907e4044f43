"""The read side's Redis clients."""

from __future__ import annotations

import asyncio

from projections.redis_store import connect_async
from tests.support.env import REDIS_URL


async def test_a_burst_of_more_commands_than_connections_waits_instead_of_failing() -> None:
    client = connect_async(REDIS_URL)
    try:
        answers = await asyncio.gather(
            *(client.get(f"nome-test-missing-{i}") for i in range(500)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert [a for a in answers if isinstance(a, BaseException)] == []
    assert answers == [None] * 500
