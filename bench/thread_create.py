"""Figure 1: POST /v1/threads from 32 clients against NOME as deployed, read against raw
one-row INSERTs, and against eventsourcing's stock save() of a one-event aggregate per request
behind a bare Litestar route (the ">= 3x" baseline: how the issue that set the target measured
the stock rate, with the same clients, warm-up and window) and in-process (a diagnostic)."""

from __future__ import annotations

import asyncio

from bench import pg
from bench.client import Response, build, post_json
from bench.context import Bench, Figure
from bench.load import Window, closed_loop

NAME = "1 thread creations/s vs raw INSERT tx/s"  # its value is a baseline of later figures


def create_request(bench: Bench) -> bytes:
    """The command figures 1 and 3 send (and the all-roles diagnostic)."""
    body = {"title": "bench thread", "metadata": {"source": "bench"}}
    return post_json("/v1/threads", body, bench.admin)


async def creations(bench: Bench, port: int) -> Window:
    """Figure 1's load against a NOME on `port`; returns creations/s once the read models have
    caught up with it, so what follows starts on a quiet NOME."""
    last = [0]

    def position(response: Response) -> None:
        if response.status == 201:
            last[0] = max(last[0], int(response.header(b"x-nome-position") or 0))

    request = create_request(bench)
    window = await closed_loop(
        port,
        lambda _: request,
        clients=bench.args.clients,
        window=bench.window(),
        on_response=position,
    )
    bench.phase("  " + window.summary("creations/s"))
    waited = await asyncio.to_thread(bench.wait_projections, last[0])
    bench.phase(f"  read models caught up {waited:.2f} s after the load")
    return window


async def measure(bench: Bench) -> list[Figure]:
    clients = bench.args.clients
    bench.phase(f"baseline: raw one-row INSERT transactions, {clients} connections")
    raw = await asyncio.to_thread(
        pg.raw_inserts, bench.pg_url, bench.schema, clients=clients, window=bench.window()
    )
    bench.phase(f"  {raw.summary('tx/s')}")
    bench.phase(f"baseline: stock eventsourcing save() of a new aggregate, {clients} threads")
    stock = await asyncio.to_thread(
        pg.stock_saves, bench.pg_url, bench.schema, clients=clients, window=bench.window()
    )
    bench.phase(f"  {stock.summary('saves/s')}")
    bench.phase(
        f"baseline: stock save() per request behind a bare Litestar route, {clients} clients"
    )
    save = build("POST", "/stock/save")
    with bench.servers.stock() as server:
        stock_http = await closed_loop(
            server.port, lambda _: save, clients=clients, window=bench.window()
        )
    bench.phase(f"  {stock_http.summary('saves/s')}")
    bench.phase(f"figure 1: POST /v1/threads, {clients} clients, NOME as deployed")
    nome = await creations(bench, bench.servers.nome().port)
    rate, problem = nome.rate, nome.problem
    return [
        Figure(NAME, rate, "/s", "raw INSERT tx/s", raw.rate, ">= 1,500/s", problem),
        Figure(
            "1 thread creations/s vs stock save()/s",
            rate,
            "/s",
            "stock save() per request, bare Litestar /s",
            stock_http.rate,
            ">= 3x",
            problem or stock_http.problem,
        ),
        Figure(
            "1 thread creations/s vs stock save(), no HTTP",
            rate,
            "/s",
            f"eventsourcing save()/s, {clients} threads in-process",
            stock.rate,
        ),
    ]
