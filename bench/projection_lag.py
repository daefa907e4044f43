"""Figure 3: projection lag at a paced 500 POST /v1/threads per second: for each command, the
time from its response (the append is committed) until the threads read model's position
reaches the response's X-Nome-Position, read against the POST's own latency."""

from __future__ import annotations

import asyncio
import heapq
import time

import redis.asyncio

from bench import internals
from bench.client import Response
from bench.context import Bench, Figure, latencies
from bench.load import paced
from bench.thread_create import create_request


async def measure(bench: Bench) -> list[Figure]:
    rate = bench.args.lag_rate
    bench.phase(f"figure 3: projection lag at a paced {rate:.0f}/s of POST /v1/threads")
    key = internals.position_keys(bench.nome_env)["threads"]
    watch = redis.asyncio.Redis.from_url(bench.redis_url)
    pending: list[tuple[int, float]] = []  # (position, answered), lowest position first
    lags: list[float] = []
    seen = [0]  # the highest position observed
    finished = asyncio.Event()

    def answered(response: Response, _due: float, done: float) -> None:
        position = int(response.header(b"x-nome-position") or 0)
        if response.status != 201:
            return
        if position <= seen[0]:
            lags.append(0.0)  # already visible when its answer arrived
        else:
            heapq.heappush(pending, (position, done))

    async def watcher() -> None:
        """Polls the position every millisecond: the lag's resolution."""
        grace = None
        while True:
            value = int(await watch.get(key) or 0)
            now = time.perf_counter()
            seen[0] = max(seen[0], value)
            while pending and pending[0][0] <= value:
                lags.append(max(0.0, now - heapq.heappop(pending)[1]))
            if finished.is_set():
                grace = grace or now + 5.0
                if not pending or now > grace:
                    return
            await asyncio.sleep(0.001)

    watching = asyncio.create_task(watcher())
    try:
        posts = await paced(
            bench.servers.nome().port,
            create_request(bench),
            rate=rate,
            seconds=bench.args.seconds,
            clients=bench.args.clients,
            on_response=answered,
        )
    finally:
        finished.set()
        await watching
        await watch.aclose()
    figures = latencies(
        "3 projection lag {q} vs POST {q}",
        lags,
        "POST latency {q} ms",
        posts.latencies,
        "< 50 ms",
        f"{len(pending)} never visible" if pending else posts.problem,
    )
    p50, p99 = figures
    bench.phase(
        f"  lag p50 {p50.value:.1f} ms, p99 {p99.value:.1f} ms over {len(lags)} commands; "
        f"POST p50 {p50.baseline:.1f} ms, p99 {p99.baseline:.1f} ms"
    )
    return figures
