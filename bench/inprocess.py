"""The write path without HTTP: `Application.create_thread` through the group-commit writer,
in this process. Read against figure 1 it says what the HTTP layer (Litestar, auth, Redis
round trips) costs; it also tops the log up so the rebuild has tens of thousands of events."""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.baselines import Rate
from nome_core.application import Actor, Application
from nome_core.clock import SystemClock
from nome_core.eventstore import EventStore
from nome_core.tenants.state import tenant_id_for
from nome_core.writer import GroupCommitWriter


async def create_threads(
    url: str,
    schema: str,
    *,
    clients: int,
    warmup: float,
    duration: float,
    at_least: int,
    cap: float = 30.0,
) -> Rate:
    """`clients` concurrent create_thread commands; measured like an HTTP figure, then kept
    going (unmeasured) until the log holds `at_least` events or `cap` seconds have passed."""
    store = EventStore(url, schema=schema, create_table=False)
    writer = GroupCommitWriter(store)
    writer.start()
    app = Application(store, writer, SystemClock())
    actor = Actor(tenant_id_for("default"))
    done = [0, 0]  # commands, errors
    stop = asyncio.Event()
    enough = asyncio.Event()
    head = 0

    async def worker() -> None:
        while not stop.is_set():
            try:
                await app.create_thread(actor, "bench thread", {"source": "bench"})
            except Exception:
                done[1] += 1
                continue
            done[0] += 1
            if head + done[0] >= at_least:
                enough.set()

    try:
        head = await asyncio.to_thread(store.head)
        workers = [asyncio.create_task(worker()) for _ in range(clients)]
        started = time.perf_counter()
        await asyncio.sleep(warmup)
        first, first_errors, t0 = done[0], done[1], time.perf_counter()
        await asyncio.sleep(duration)
        last, last_errors, t1 = done[0], done[1], time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), max(0.0, cap - (time.perf_counter() - started)))
        stop.set()
        await asyncio.gather(*workers)
        return Rate(last - first, t1 - t0, last_errors - first_errors)
    finally:
        writer.stop()
        store.close()
