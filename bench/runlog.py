"""Log-side helpers for the streaming figures: a tenant with its own admin key, a long
recorded run written straight into the log, and raw reads of the same rows as baselines.

A 10,000-event run cannot come from the scripted provider (the harness coalesces its deltas
into 2 KiB or 50 ms), so its events are sealed here exactly as the application seals them
(ids, times, hash chain) and inserted in batches. The run is created finished: no
`run.admitted` on its thread, so no worker ever picks it up, and its `run.completed` keeps
the runs read model consistent.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from bench.baselines import Rate
from nome_core.application import Actor, Application
from nome_core.clock import SystemClock
from nome_core.eventstore import Client, Draft, EventStore, Head, Meta, seal
from nome_core.runs.events import (
    AgentSnapshot,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunCreated,
    RunStarted,
    Usage,
)
from nome_core.runs.scripted import MODEL
from nome_core.tenants.state import tenant_id_for
from nome_core.writer import GroupCommitWriter

# ~40 characters per delta: the size of a streamed token group from a real model.
_DELTA = "lorem ipsum dolor sit amet, consectetur "


async def create_tenant(url: str, schema: str, name: str) -> tuple[str, str]:
    """A new tenant (free plan, its own credits) with an admin key: (tenant id, raw key).

    Written from this process like `nome keys create`; the server sees it through its
    projector, so wait for GET /v1/bootstrap to accept the key before using it.
    """
    store = EventStore(url, schema=schema, create_table=False)
    writer = GroupCommitWriter(store)
    writer.start()
    try:
        app = Application(store, writer, SystemClock())
        await app.create_tenant(name)
        tenant_id = tenant_id_for(name)
        _, raw = await app.create_key(Actor(tenant_id), "bench admin", ["admin"])
        return tenant_id, raw
    finally:
        writer.stop()
        store.close()


def insert_run(
    url: str, schema: str, tenant_id: str, thread_id: str, *, events: int, batch: int = 1000
) -> tuple[str, int, float]:
    """A completed run of exactly `events` events (created, started, deltas, message
    completed, run completed): (run id, position of its last event, seconds to insert)."""
    if events < 5:
        raise ValueError("a recorded run needs at least 5 events")
    clock = SystemClock()
    run_id, message_id, work_item = clock.new_id(), clock.new_id(), clock.new_id()
    deltas = events - 4
    text = _DELTA * deltas
    drafts: list[Any] = [
        RunCreated(
            input="bench: a recorded run of many deltas",
            agent_id=clock.new_id(),
            tier="standard",
            domain_hints=[],
            client=Client(surface="bench"),
            agent=AgentSnapshot(provider="scripted", model=MODEL, instructions="", tools=[]),
            creator_roles=["admin"],
        ),
        RunStarted(model=MODEL),
        *(
            Draft(MessageDelta(message_id=message_id, text=_DELTA), work_item)
            for _ in range(deltas)
        ),
        Draft(MessageCompleted(message_id=message_id, role="assistant", content=text), work_item),
        RunCompleted(
            usage=Usage(input_tokens=7, output_tokens=len(text.split()), credits=1), output=text
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
        clock=clock,
    )
    store = EventStore(url, schema=schema, create_table=False)
    started = time.perf_counter()
    last = 0
    try:
        for start in range(0, len(sealed), batch):
            last = store.insert(sealed[start : start + batch])[-1]
    finally:
        store.close()
    return run_id, last, time.perf_counter() - started


def _best(url: str, query: sql.Composed, params: tuple[Any, ...], repeat: int) -> Rate:
    best: Rate | None = None
    with psycopg.connect(url) as conn:
        for _ in range(repeat):
            t0 = time.perf_counter()
            # Binary: bytea as bytes, not hex text, the fastest read psycopg has.
            with conn.cursor() as cursor:
                cursor.execute(query, params, binary=True)
                rows = len(cursor.fetchall())
            seconds = time.perf_counter() - t0
            if best is None or seconds < best.seconds:
                best = Rate(rows, seconds, 0)
    assert best is not None
    return best


def raw_stream_select(url: str, schema: str, stream_id: str, *, repeat: int = 3) -> Rate:
    """One stream's rows in seq order, best of `repeat`: the floor under a replay."""
    query = sql.SQL(
        "SELECT state FROM {} WHERE originator_id = %s ORDER BY originator_version"
    ).format(sql.Identifier(schema, "nome_events"))
    return _best(url, query, (stream_id,), repeat)


def raw_log_select(url: str, schema: str, upto: int, *, repeat: int = 3) -> Rate:
    """The log's rows up to a position in position order, best of `repeat`: the floor under
    an export of the same range."""
    query = sql.SQL(
        "SELECT state FROM {} WHERE notification_id <= %s ORDER BY notification_id"
    ).format(sql.Identifier(schema, "nome_events"))
    return _best(url, query, (upto,), repeat)
