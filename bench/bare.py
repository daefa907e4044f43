"""The bare baselines' server: Litestar on uvicorn doing the least each route can do, served
like `nome serve` (one uvicorn worker, same loop and HTTP implementation), so that a ratio to a
NOME route is what NOME's middleware, auth, Redis, log and workers cost.

- `GET /doc/{id}`: ready JSON bytes the size of a thread (against GET /v1/threads/{id}).
- `POST /sse/one`: one frame at once, then the end (against POST /v1/chat/stream).
- `GET /sse/feed/{name}`: a fan-out like NOME's run tail (one list of frames, one asyncio.Event
  waking every subscriber); `hello` at once, then each frame that `POST .../publish` sends on a
  schedule of (offset, size) measured on NOME, stamped with an `at` like NOME's envelopes.
- `POST /stock/save`: eventsourcing's stock `save()` of a new one-event aggregate per request,
  in Litestar's thread pool (the stock way to call blocking library code): the stock rate as
  the issue that set figure 1's target measured it. Configured by NOME_BENCH_STOCK.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Response, get, post
from litestar.response import Stream

from bench.pg import Dot, Stock, stock_application

DOC = (
    b'{"id":"0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11","title":"bench thread","metadata":{},'
    b'"created_at":"2025-01-01T00:00:00.000000Z","updated_at":"2025-01-01T00:00:00.000000Z",'
    b'"message_count":0,"last_run_id":null,"active_run_id":null}'
)
ONE = (
    b'id: 1\nevent: message.delta\ndata: {"id":"0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11",'
    b'"type":"message.delta","seq":1,"at":"2025-01-01T00:00:00.000000Z",'
    b'"data":{"message_id":"m","text":"hello"}}\n\n'
)
SSE = {"media_type": "text/event-stream", "headers": {"Cache-Control": "no-cache"}}


@get("/doc/{doc_id:str}")
async def doc(doc_id: str) -> Response[bytes]:
    return Response(DOC, media_type="application/json")


@post("/sse/one", status_code=200)
async def sse_one(data: dict[str, Any]) -> Stream:
    async def one() -> AsyncIterator[bytes]:
        yield ONE

    return Stream(one(), **SSE)


class Feed:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done = False
        self.changed = asyncio.Event()

    def add(self, frame: bytes, *, last: bool) -> None:
        self.frames.append(frame)
        self.done = last
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


feeds: dict[str, Feed] = {}
publishers: set[asyncio.Task[None]] = set()


@get("/sse/feed/{name:str}")
async def sse_feed(name: str) -> Stream:
    feed = feeds.setdefault(name, Feed())

    async def frames() -> AsyncIterator[bytes]:
        yield b"id: 0\nevent: hello\ndata: {}\n\n"
        sent = 0
        while True:
            while sent < len(feed.frames):  # frames may arrive while one is being sent
                yield feed.frames[sent]
                sent += 1
            if feed.done:
                return
            await feed.changed.wait()

    return Stream(frames(), **SSE)


class Schedule(msgspec.Struct):
    frames: list[tuple[float, int]]  # (seconds after the first frame, size in bytes)


@post("/sse/feed/{name:str}/publish", status_code=202)
async def publish(name: str, data: Schedule) -> None:
    feed = feeds.setdefault(name, Feed())

    async def run() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq, (offset, size) in enumerate(data.frames, 1):
            if (wait := start + offset - loop.time()) > 0:
                await asyncio.sleep(wait)
            at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            head = b'id: %d\nevent: message.delta\ndata: {"at":"%s","pad":"' % (seq, at)
            pad = b"x" * max(0, size - len(head) - 5)
            feed.add(head + pad + b'"}\n\n', last=seq == len(data.frames))

    task = asyncio.create_task(run())
    publishers.add(task)
    task.add_done_callback(publishers.discard)


stock: list[Stock] = []  # the application, once started


async def open_stock() -> None:
    if config := os.environ.get("NOME_BENCH_STOCK"):
        url, schema, pool = config.split()
        # Connects and creates its table: blocking, so off the event loop.
        stock.append(
            await anyio.to_thread.run_sync(lambda: stock_application(url, schema, pool=int(pool)))
        )


async def close_stock() -> None:
    for app in stock:
        await anyio.to_thread.run_sync(app.close)


@post("/stock/save", status_code=201, sync_to_thread=True)
def stock_save() -> dict[str, str]:
    dot = Dot()
    stock[0].save(dot)
    return {"id": str(dot.id)}


app = Litestar(
    route_handlers=[doc, sse_one, sse_feed, publish, stock_save],
    on_startup=[open_stock],
    on_shutdown=[close_stock],
    logging_config=None,
    debug=False,
)
