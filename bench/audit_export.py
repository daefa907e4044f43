"""Figure 10: GET /v1/audit/export (the whole tenant log as NDJSON) read against a raw binary
SELECT of the same rows, alternated, best of 3; and, as a diagnostic, the export's page
function in-process, without HTTP.

It runs on the bootstrap tenant before any figure makes a tenant of its own, so that every
row the export walks is one it exports and both sides cover the same rows.
"""

from __future__ import annotations

import asyncio
import time

from bench import internals, pg
from bench.client import Response, build, call, read_body
from bench.context import Bench, Figure


def raw_upto(bench: Bench, position: int) -> float:
    rows = "WHERE notification_id <= %s ORDER BY notification_id"
    return pg.select_rate(bench.pg_url, bench.schema, rows, (position,), repeat=1)


def in_process(bench: Bench, tenant: str) -> tuple[float, float]:
    """(events/s of the export's page function, raw rows/s), alternated, best of 3."""
    export = raw = 0.0
    with internals.exporter(bench.nome_env, tenant) as (head, run):
        for _ in range(3):
            started = time.perf_counter()
            export = max(export, run() / (time.perf_counter() - started))
            raw = max(raw, raw_upto(bench, head))
    return export, raw


async def measure(bench: Bench) -> list[Figure]:
    bench.phase("figure 10: GET /v1/audit/export vs SELECT of the same rows, alternated, best of 3")
    port = bench.servers.nome().port
    request = build("GET", "/v1/audit/export", headers=bench.admin)
    export = raw = 0.0
    for _ in range(3):
        events, seconds, head = await read_body(port, request, b"\n")
        export = max(export, events / seconds)
        upto = int(Response(200, head, b"").header(b"x-nome-position") or 0)
        raw = max(raw, await asyncio.to_thread(raw_upto, bench, upto))
    bench.phase(f"  export {events:,} events at {export:,.0f} events/s; raw {raw:,.0f} rows/s")
    bench.phase("  diagnostic: the same export in-process, no HTTP")
    tenant = (await call(port, "GET", "/v1/bootstrap", headers=bench.admin))["tenant"]["id"]
    local, local_raw = await asyncio.to_thread(in_process, bench, tenant)
    bench.phase(f"  in-process {local:,.0f} events/s vs raw {local_raw:,.0f} rows/s")
    return [
        Figure(
            "10 audit export events/s vs raw SELECT",
            export,
            "/s",
            "SELECT of the same rows/s",
            raw,
            ">= 0.5x",
        ),
        Figure(
            "10 audit export in-process (no HTTP) vs raw SELECT",
            local,
            "/s",
            "SELECT of the same rows/s",
            local_raw,
        ),
    ]
