"""Audit export throughput against reading the same rows raw from Postgres.

`measure_export` runs the export exactly as `GET /v1/audit/export` does (the route's async
generator: pages of rows read in worker threads, tenant filter, envelope encoding), in
process and without HTTP, and times it against one plain `SELECT state ... ORDER BY
notification_id` over the same rows. Target: the export at 50% of raw or better.

Stand-alone: `python -m bench.export_bench [--events N]` fills a scratch schema, measures,
prints the numbers and drops the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg.rows

from nome_api.routes.audit import ExportFilter, export_chunks, pinned
from nome_core.clock import SystemClock
from nome_core.eventstore import Event, EventStore, Head, Meta, seal
from nome_core.runs.events import MessageDelta

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def measure_export(
    database_url: str, schema: str, tenant_id: str, *, repeat: int = 5
) -> dict[str, Any]:
    """Rows/s raw, rows/s and events/s exported, and their ratio: best of `repeat` runs each.

    `ratio` is raw time / export time over the same rows (up to the head at the start), so
    1.0 means the export costs nothing over reading the rows, 0.5 that it takes twice as long.
    """
    store = EventStore(database_url, schema=schema, create_table=False)
    if not store.is_postgres:
        store.close()
        raise ValueError("measure_export compares against Postgres: give a postgresql:// URL")
    try:
        head = store.head()
        flt = pinned(ExportFilter(), head)
        raw_s = export_s = float("inf")
        # Alternated, best of each: a load spike from elsewhere on the machine hits both.
        for _ in range(max(1, repeat)):
            seconds, (rows, raw_bytes) = _timed(lambda: _raw(store, head))
            raw_s = min(raw_s, seconds)
            seconds, (events, export_bytes) = _timed(
                lambda: asyncio.run(_export(store, tenant_id, flt))
            )
            export_s = min(export_s, seconds)
    finally:
        store.close()
    return {
        "rows": rows,
        "events": events,
        "raw_bytes": raw_bytes,
        "export_bytes": export_bytes,
        "raw_s": raw_s,
        "export_s": export_s,
        "raw_rows_per_s": rows / raw_s if raw_s else 0.0,
        "export_rows_per_s": rows / export_s if export_s else 0.0,
        "export_events_per_s": events / export_s if export_s else 0.0,
        "ratio": raw_s / export_s if export_s else 0.0,
    }


def _timed(run: Callable[[], tuple[int, int]]) -> tuple[float, tuple[int, int]]:
    started = time.perf_counter()
    outcome = run()
    return time.perf_counter() - started, outcome


def _raw(store: EventStore, head: int) -> tuple[int, int]:
    """Every row's state up to `head`, in position order, on the store's own connections."""
    table = f'"{store.schema or "public"}"."{store.table}"'
    sql = f"SELECT state FROM {table} WHERE notification_id <= %s ORDER BY notification_id"
    rows = size = 0
    with store.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
        cursor.row_factory = psycopg.rows.tuple_row
        cursor.execute(sql, (head,), binary=True)
        for (state,) in cursor:
            rows += 1
            size += len(state)
    return rows, size


async def _export(store: EventStore, tenant_id: str, flt: ExportFilter) -> tuple[int, int]:
    """The route's generator, consumed like a fast client would: count and drop."""
    lines = size = 0
    async for chunk in export_chunks(store, tenant_id, flt):
        lines += chunk.count(b"\n")
        size += len(chunk)
    return lines, size


def fill(store: EventStore, tenant_id: str, events: int, *, per_stream: int = 1000) -> None:
    """`events` message deltas of ~200 bytes of text, 2,000 per insert."""
    clock = SystemClock()
    text = "The quick brown fox jumps over the lazy dog; naïve café. " * 4
    pending: list[Event] = []
    for start in range(0, events, per_stream):
        stream = clock.new_id()
        count = min(per_stream, events - start)
        pending += seal(
            [MessageDelta(message_id=f"m{n}", text=text) for n in range(count)],
            stream_id=stream,
            head=Head(),
            tenant_id=tenant_id,
            thread_id=None,
            run_id=stream,
            meta=Meta(),
            clock=clock,
        )
        while len(pending) >= 2000:
            store.insert(pending[:2000])
            pending = pending[2000:]
    if pending:
        store.insert(pending)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--database-url", default=os.environ.get("NOME_BENCH_DATABASE_URL", DEFAULT_URL)
    )
    args = parser.parse_args()
    schema = f"bench_export_{uuid.uuid4().hex[:10]}"
    tenant_id = str(uuid.uuid4())
    store = EventStore(args.database_url, schema=schema)
    try:
        fill(store, tenant_id, args.events)
        result = measure_export(args.database_url, schema, tenant_id)
    finally:
        store.drop()
        store.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
