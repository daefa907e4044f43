"""Figure 7: GET /v1/runs/{id}/replay of a 10,000-event run, read against a raw SELECT of the
same run's rows. The run is written straight into the log (bench/internals.py): the scripted
provider coalesces its deltas, so no chat makes a run this long."""

from __future__ import annotations

import asyncio

from bench import internals, pg
from bench.client import build, call, read_body
from bench.context import Bench, Figure


async def measure(bench: Bench) -> list[Figure]:
    events = bench.args.replay_events
    bench.phase(f"figure 7: replay of a {events:,}-event run: writing its events")
    port = bench.servers.nome().port
    tenant = (await call(port, "GET", "/v1/bootstrap", headers=bench.admin))["tenant"]["id"]
    body = {"title": "replay"}
    thread = await call(port, "POST", "/v1/threads", body=body, headers=bench.admin, status=201)
    run_id, last = await asyncio.to_thread(
        internals.write_run, bench.nome_env, tenant, thread["id"], events
    )
    await asyncio.to_thread(bench.wait_projections, last)
    bench.phase("  replay as SSE, as NDJSON, and the raw SELECT, alternated, best of 3 each")
    path = f"/v1/runs/{run_id}/replay"
    sse = ndjson = raw = 0.0
    for _ in range(3):  # alternated: a load spike from elsewhere hits all three alike
        count, seconds, _ = await read_body(port, build("GET", path, headers=bench.admin), b"\n\n")
        sse = max(sse, count / seconds)
        nd = build("GET", path + "?format=ndjson", headers=bench.admin)
        lines, seconds, _ = await read_body(port, nd, b"\n")
        ndjson = max(ndjson, lines / seconds)
        rows = "WHERE originator_id = %s ORDER BY originator_version"  # the run's, in order
        args = (bench.pg_url, bench.schema, rows, (run_id,))
        raw = max(raw, await asyncio.to_thread(pg.select_rate, *args, repeat=1))
    bench.phase(f"  SSE {sse:,.0f} events/s, NDJSON {ndjson:,.0f} events/s; raw {raw:,.0f} rows/s")
    problem = "" if count == lines == events else f"{count} frames, {lines} lines of {events}"
    return [
        Figure(
            "7 replay events/s vs raw stream SELECT",
            sse,
            "/s",
            "SELECT of the run's rows/s",
            raw,
            ">= 50,000/s",
            problem,
        )
    ]
