"""A log follower keeps its lease while an effect takes longer than the lease (an import's
git fetch): another process following the same log does not start the same effect."""

from __future__ import annotations

import asyncio

from nome_api.jobs.follower import FollowerHost
from nome_api.streams import LogSignal
from nome_core.events import Event
from nome_core.threads.events import ThreadCreated
from projections.redis_store import connect_async
from tests.support.api import Api, auth

LEASE_S = 0.2


class Slow:
    """Takes three leases' time over each thread.created, counting who did it."""

    name = "slow-test-follower"
    types = frozenset({ThreadCreated.type})

    def __init__(self, done: list[tuple[str, str]], who: str) -> None:
        self.done = done
        self.who = who

    async def handle(self, event: Event) -> float | None:
        await asyncio.sleep(LEASE_S * 3)
        self.done.append((self.who, event.stream_id))
        return None


async def test_a_long_effect_is_done_once_by_one_of_two_followers(api: Api) -> None:
    key = await api.key()
    made = await api.client.post("/v1/threads", json={"title": "t"}, headers=auth(key))
    assert made.status_code == 201, made.text
    runtime, done = api.runtime, []
    # This test's loop's own clients: the app's belong to the test client's loop.
    redis = connect_async(runtime.settings.redis_url)
    hosts = [
        FollowerHost(
            runtime.store,
            redis,
            runtime.settings.redis_prefix,
            LogSignal(),
            [Slow(done, who)],
            poll_s=0.05,
            lease_s=LEASE_S,
        )
        for who in ("a", "b")
    ]
    for host in hosts:
        await host.start()
    try:
        for _ in range(200):
            if done:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(LEASE_S * 5)  # time for a second, wrong, execution to show
    finally:
        for host in hosts:
            await host.stop()
        await redis.aclose()
    threads = [stream for _, stream in done]
    assert threads.count(made.json()["id"]) == 1, done
