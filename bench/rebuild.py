"""Figure 4: a full rebuild of every read model in-process, as `nome projections rebuild` does,
read against a raw SELECT of every row in log order; and, as a diagnostic, thread creations
in-process (the application and its writer, no HTTP), read against figure 1 over HTTP.

Both need NOME stopped: a running projector would apply the in-process writes while they are
measured, and would hold the leases the rebuild takes.
"""

from __future__ import annotations

import asyncio

from bench import internals, pg, thread_create
from bench.context import Bench, Figure
from bench.load import Window, concurrently


async def measure(bench: Bench) -> list[Figure]:
    bench.servers.stop_nome()
    clients, at_least = bench.args.clients, bench.args.rebuild_events
    bench.phase(f"diagnostic: in-process create_thread (no HTTP), {clients} concurrent commands")
    async with internals.thread_creator(bench.nome_env) as (create, head):

        async def op(_: int) -> int:
            try:
                await create()
            except Exception:
                return 500
            return 201

        local = await concurrently(clients, bench.window(), op)
        bench.phase(f"  {local.summary('creations/s')}")
        # Unmeasured: top the log up so the rebuild has tens of thousands of events to apply.
        if (missing := at_least - await asyncio.to_thread(head)) > 0:
            bench.phase(f"  topping the log up to {at_least:,} events")
            top_up = Window(0, 30)  # stopped once there are enough, after 30 s at most

            async def more(client: int) -> int:
                if len(top_up.latencies) >= missing:
                    top_up.stop()
                return await op(client)

            await concurrently(clients, top_up, more)
    bench.phase("figure 4: full rebuild of every read model, in-process")
    events, seconds = await asyncio.to_thread(internals.rebuild, bench.nome_env)
    bench.phase(f"  {events:,} events in {seconds:.2f} s = {events / seconds:,.0f} events/s")
    raw = await asyncio.to_thread(pg.select_rate, bench.pg_url, bench.schema)
    bench.phase(f"baseline: SELECT state of every row in log order, best of 3: {raw:,.0f} rows/s")
    return [
        Figure(
            "4 rebuild events/s vs raw SELECT rows/s",
            events / seconds,
            "/s",
            "raw SELECT rows/s",
            raw,
            ">= 20,000/s",
        ),
        Figure(
            "1 thread creations/s: HTTP vs in-process",
            bench.measured(thread_create.NAME),
            "/s",
            "create_thread()/s, no HTTP",
            local.rate,
        ),
    ]
