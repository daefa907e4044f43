"""Figure 2: GET /v1/threads/{id} over 2,000 threads from 32 clients, read against a bare
Litestar route answering ready bytes of the same size: what NOME's middleware, auth and Redis
reads cost on a read."""

from __future__ import annotations

import asyncio

from bench.client import build, call
from bench.context import Bench, Figure
from bench.load import closed_loop

THREADS = 2000


async def thread_ids(bench: Bench, port: int) -> list[str]:
    """The 2,000 most recently updated threads (figure 1 made them), any missing made now."""
    ids: list[str] = []
    cursor = ""
    while len(ids) < THREADS:
        page = await call(port, "GET", f"/v1/threads?limit=200{cursor}", headers=bench.admin)
        ids += [thread["id"] for thread in page["data"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    body = {"title": "bench thread"}
    while len(ids) < THREADS:  # run alone (`python -m bench thread_get`): make them, 50 at once
        made = await asyncio.gather(
            *(
                call(port, "POST", "/v1/threads", body=body, headers=bench.admin, status=201)
                for _ in range(min(50, THREADS - len(ids)))
            )
        )
        ids += [thread["id"] for thread in made]
    return ids[:THREADS]


async def measure(bench: Bench) -> list[Figure]:
    clients = bench.args.clients
    bench.phase(f"baseline: bare Litestar GET route (one uvicorn worker), {clients} clients")
    doc = build("GET", "/doc/0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11")
    bare = await closed_loop(
        bench.servers.bare().port, lambda _: doc, clients=clients, window=bench.window()
    )
    bench.phase(f"  {bare.summary('req/s')}")
    nome = bench.servers.nome()
    ids = await thread_ids(bench, nome.port)
    bench.phase(f"figure 2: GET /v1/threads/{{id}} over {len(ids)} threads, {clients} clients")
    gets = [build("GET", f"/v1/threads/{i}", headers=bench.admin) for i in ids]
    reads = await closed_loop(
        nome.port, lambda i: gets[i % len(gets)], clients=clients, window=bench.window()
    )
    bench.phase(f"  {reads.summary('req/s')}")
    return [
        Figure(
            "2 GET /v1/threads/{id} req/s vs bare route",
            reads.rate,
            "/s",
            "bare Litestar req/s",
            bare.rate,
            ">= 0.5x",
            reads.problem,
        )
    ]
