"""Every use of NOME's internals by the bench, behind five functions.

Everything else in bench/ talks to NOME over HTTP or its CLI, so when nome_core, projections or
nome_api are reshaped only this file changes. These are what HTTP cannot do: watch the read
models' positions every millisecond, write a 10,000-event run (the scripted provider coalesces
deltas), and time the write path, a rebuild and the export without HTTP in front.

Each function takes the NOME_* environment the bench's servers get and builds what it needs
the way NOME's own CLI does (a `Runtime` without roles). Each imports what it uses itself: an
internal that moved breaks the figures that use it, not the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# ~40 characters per delta: the size of a streamed token group from a real model.
DELTA = "lorem ipsum dolor sit amet, consectetur "


def runtime(env: dict[str, str]) -> Any:
    """A NOME process without roles: its store, writer, application and projection runner."""
    from nome_api.runtime import Runtime
    from nome_api.settings import Settings

    return Runtime(Settings.from_env(env), roles=())


def position_keys(env: dict[str, str]) -> dict[str, str]:
    """Every read model's name -> the Redis key of the log position it has applied."""
    from projections.engine import Tracking
    from projections.registry import ReadModels

    prefix = env["NOME_REDIS_PREFIX"]
    tracking = Tracking(prefix)
    return {p.name: tracking.position(p.name) for p in ReadModels(prefix).all}


def write_run(env: dict[str, str], tenant_id: str, thread_id: str, events: int) -> tuple[str, int]:
    """A finished run of exactly `events` events (created, started, deltas, message completed,
    run completed), sealed as the application seals them and inserted 1,000 at a time; created
    finished, so no worker picks it up. Returns (run id, the position of its last event)."""
    from nome_core.events import Client, Draft, Head, Meta, seal
    from nome_core.runs import events as ev
    from nome_core.runs.scripted import MODEL

    nome = runtime(env)
    run_id, message_id, turn = nome.clock.new_id(), nome.clock.new_id(), nome.clock.new_id()
    text = DELTA * (events - 4)
    drafts: list[Any] = [
        ev.RunCreated(
            input="bench: a recorded run of many deltas",
            agent_id=nome.clock.new_id(),
            tier="standard",
            domain_hints=[],
            client=Client(surface="bench"),
            agent=ev.AgentSnapshot(provider="scripted", model=MODEL, instructions="", tools=[]),
            creator_roles=["admin"],
        ),
        ev.RunStarted(model=MODEL),
        *(
            Draft(ev.MessageDelta(message_id=message_id, text=DELTA), turn)
            for _ in range(events - 4)
        ),
        Draft(ev.MessageCompleted(message_id=message_id, role="assistant", content=text), turn),
        ev.RunCompleted(
            usage=ev.Usage(input_tokens=7, output_tokens=events, credits=1), output=text
        ),
    ]
    sealed = seal(
        drafts,
        stream_id=run_id,
        head=Head(),
        tenant_id=tenant_id,
        thread_id=thread_id,
        run_id=run_id,
        meta=Meta(principal="bench"),
        clock=nome.clock,
    )
    try:
        for start in range(0, len(sealed), 1000):
            last = nome.store.insert(sealed[start : start + 1000])[-1]
    finally:
        nome.store.close()
    return run_id, last


@contextlib.asynccontextmanager
async def thread_creator(
    env: dict[str, str],
) -> AsyncIterator[tuple[Callable[[], Awaitable[object]], Callable[[], int]]]:
    """(create one thread in the default tenant, the log's head): the application and its
    group-commit writer in this process, as the API process runs them, without HTTP."""
    from nome_core.bus import Actor
    from nome_core.tenants.state import tenant_id_for
    from nome_core.threads.commands import CreateThread

    nome = runtime(env)
    actor = Actor(tenant_id_for("default"))
    metadata = {"source": "bench"}

    async def create() -> object:
        cmd = CreateThread(thread_id=nome.app.new_id(), title="bench thread", metadata=metadata)
        return await nome.app.threads.handle(actor, cmd)

    nome.writer.start()
    try:
        yield create, nome.store.head
    finally:
        nome.writer.stop()
        nome.store.close()


def enterprise_default(env: dict[str, str]) -> None:
    """The bootstrap tenant `default` on the enterprise plan: the free plan's 10,000 threads
    would refuse figure 1's load after a few seconds. As the platform operator's
    `PUT /v1/platform/tenants/{id}/plan` does, in-process (no platform key to bootstrap)."""
    from nome_core.bus import Actor
    from nome_core.tenants.commands import ChangePlan
    from nome_core.tenants.state import tenant_id_for

    async def change() -> None:
        nome = runtime(env)
        nome.writer.start()
        try:
            tenant_id = tenant_id_for("default")
            cmd = ChangePlan(tenant_id=tenant_id, plan="enterprise")
            await nome.app.tenants.handle(Actor(tenant_id), cmd)
        finally:
            nome.writer.stop()
            nome.store.close()
            nome.redis_sync.close()
            await nome.redis.aclose()

    # A loop of its own: the bench's is running (the caller may be on it).
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, change()).result()


def insert_seeded(
    store: Any,
    count: int,
    batch: int,
    events_of: Callable[[int], list[Any]],
    progress: Callable[[int], None],
) -> int:
    """Items 0..count-1, each `events_of(i)` sealed events, inserted `batch` items at a time:
    a batch is inserted in a thread while the next one is sealed (the insert mostly waits on
    Postgres); `progress(items written)` after each. The last event's position."""
    inserting: Future[list[int]] | None = None
    with ThreadPoolExecutor(1) as inserter:
        for start in range(0, count, batch):
            events = [e for i in range(start, min(count, start + batch)) for e in events_of(i)]
            if inserting is not None:
                inserting.result()
                progress(start)
            inserting = inserter.submit(store.insert, events)
        assert inserting is not None
        last: int = inserting.result()[-1]
        progress(count)
    return last


def rebuild(env: dict[str, str]) -> tuple[int, float]:
    """Every read model rebuilt from the start of the log, as `nome projections rebuild` does:
    (events applied, seconds). No server may run on this prefix (it would hold the leases)."""
    from nome_api.logging import configure

    configure("console", "warning")  # the runner logs each wiped read model at info
    nome = runtime(env)
    runner = nome.runner
    try:
        for projection in nome.read_models.all:
            runner.request_rebuild(projection.name)
        started = time.perf_counter()
        runner.catch_up()
        return runner.applied_events, time.perf_counter() - started
    finally:
        runner.stop()  # releases the leases; no thread was started
        nome.redis_sync.close()
        nome.store.close()


@contextlib.contextmanager
def exporter(env: dict[str, str], tenant_id: str) -> Iterator[tuple[int, Callable[[], int]]]:
    """(the log's head, export): `export()` runs GET /v1/audit/export's page function over the
    tenant's log up to that head, consumed like a fast client, and returns the event count."""
    from nome_api.routes.audit import ExportFilter, export_chunks, pinned

    store = runtime(env).store
    head = store.head()
    snapshot = pinned(ExportFilter(), head)

    async def lines() -> int:
        return sum(
            [chunk.count(b"\n") async for chunk in export_chunks(store, tenant_id, snapshot)]
        )

    try:
        yield head, lambda: asyncio.run(lines())
    finally:
        store.close()
