"""The bare-route baselines: Litestar on uvicorn with the least a route can do.

Served exactly like `nome serve` (uvicorn, one worker, same loop and HTTP implementation), so
a ratio to a NOME route is what NOME's middleware, auth, Redis reads, log and workers cost.

- `GET /doc/{id}`: ready JSON bytes the size of a thread document (against GET /v1/threads/{id}).
- `POST /sse/one`: a JSON body in, an event stream out that sends one frame at once and ends
  (against the first `message.delta` of POST /v1/chat/stream).
- `GET /sse/feed/{name}` and `POST /sse/feed/{name}/publish`: a fan-out like NOME's run tail
  (one shared list of frames, one asyncio.Event to wake every subscriber): a subscriber gets a
  `hello` frame at once, then every published frame, and the stream ends after the last one.
  The publisher sends frames of given sizes at given offsets (NOME's own schedule, measured in
  the same run), each stamped with an `at` like NOME's envelopes (against 200 subscribers of
  GET /v1/runs/{id}/stream).
- `POST /stock/save`: eventsourcing's stock write path, a direct `app.save()` of a new
  one-event aggregate per request (the stock `BenchStock`/`Dot` of bench/baselines.py, table
  `benchstock_events` in the bench schema), in a sync handler run in Litestar's thread pool
  (`sync_to_thread=True`, the stock way to call blocking library code). This is the stock rate
  as the issue defining figure 1 measured it: a bare Litestar app on uvicorn, one worker,
  32 clients, a direct save() per request. Figure 1's ">= 3x" is read against it. The
  application is built at startup from `NOME_BENCH_STOCK_URL`, `NOME_BENCH_STOCK_SCHEMA` and
  `NOME_BENCH_STOCK_POOL` (see `stock_env`); without them the route answers 503 and nothing
  touches a database (the fan-out baseline starts this server that way).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Response, get, post
from litestar.exceptions import ServiceUnavailableException
from litestar.response import Stream

if TYPE_CHECKING:
    from bench.baselines import BenchStock, Dot

_DOC = (
    b'{"id":"0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11","title":"bench thread","metadata":{},'
    b'"created_at":"2025-01-01T00:00:00.000000Z","updated_at":"2025-01-01T00:00:00.000000Z",'
    b'"message_count":0,"last_run_id":null,"active_run_id":null}'
)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_ONE = (
    b'id: 1\nevent: message.delta\ndata: {"id":"0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11",'
    b'"type":"message.delta","seq":1,"at":"2025-01-01T00:00:00.000000Z",'
    b'"data":{"message_id":"m","text":"hello"}}\n\n'
)


@get("/doc/{doc_id:str}")
async def doc(doc_id: str) -> Response[bytes]:
    return Response(_DOC, media_type="application/json")


@post("/sse/one", status_code=200)
async def sse_one(data: dict[str, Any]) -> Stream:
    async def one() -> AsyncIterator[bytes]:
        yield _ONE

    return Stream(one(), media_type="text/event-stream", headers=_SSE_HEADERS)


class Feed:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done = False
        self.subscribers = 0
        self._changed = asyncio.Event()

    def add(self, frame: bytes, *, last: bool) -> None:
        self.frames.append(frame)
        self.done = last
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()


_feeds: dict[str, Feed] = {}
_publishers: set[asyncio.Task[None]] = set()


@get("/sse/feed/{name:str}")
async def sse_feed(name: str) -> Stream:
    feed = _feeds.setdefault(name, Feed())

    async def frames() -> AsyncIterator[bytes]:
        feed.subscribers += 1
        yield b"id: 0\nevent: hello\ndata: {}\n\n"
        index = 0
        while True:
            while index < len(feed.frames):
                yield feed.frames[index]
                index += 1
            if feed.done:
                return
            await feed.changed()

    return Stream(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


class Schedule(msgspec.Struct):
    """(seconds after the first frame, frame size in bytes) per frame."""

    frames: list[tuple[float, int]]


@get("/sse/feed/{name:str}/subscribers")
async def subscribers(name: str) -> dict[str, int]:
    feed = _feeds.get(name)
    return {"subscribers": feed.subscribers if feed else 0}


@post("/sse/feed/{name:str}/publish", status_code=202)
async def publish(name: str, data: Schedule) -> dict[str, int]:
    feed = _feeds.setdefault(name, Feed())

    async def run() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, (offset, size) in enumerate(data.frames, 1):
            wait = start + offset - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            head = b'id: %d\nevent: message.delta\ndata: {"seq":%d,"at":"%s","pad":"' % (
                index,
                index,
                at,
            )
            pad = max(0, size - len(head) - 5)
            feed.add(head + b"x" * pad + b'"}\n\n', last=index == len(data.frames))

    task = asyncio.create_task(run())
    _publishers.add(task)
    task.add_done_callback(_publishers.discard)
    return {"frames": len(data.frames)}


_STOCK_URL = "NOME_BENCH_STOCK_URL"
_STOCK_SCHEMA = "NOME_BENCH_STOCK_SCHEMA"
_STOCK_POOL = "NOME_BENCH_STOCK_POOL"


def stock_env(url: str, schema: str, *, pool: int) -> dict[str, str]:
    """The environment that makes this server serve `POST /stock/save`."""
    return {_STOCK_URL: url, _STOCK_SCHEMA: schema, _STOCK_POOL: str(pool)}


class _Stock:
    """The one stock application, when configured, and the Aggregate class it saves."""

    app: BenchStock | None = None
    dot: type[Dot]


async def open_stock() -> None:
    """Build the stock application once, before the first request, if the bench asked for it."""
    url = os.environ.get(_STOCK_URL)
    if not url:
        return
    # Imported here: without the stock route configured, no database code is loaded.
    from bench.baselines import Dot, stock_application

    schema = os.environ[_STOCK_SCHEMA]
    pool = int(os.environ[_STOCK_POOL])
    # Connects and creates the table (IF NOT EXISTS): blocking, so off the event loop.
    _Stock.dot = Dot
    _Stock.app = await anyio.to_thread.run_sync(lambda: stock_application(url, schema, pool=pool))


async def close_stock() -> None:
    stock, _Stock.app = _Stock.app, None
    if stock is not None:
        await anyio.to_thread.run_sync(stock.close)


@post("/stock/save", status_code=201, sync_to_thread=True)
def stock_save() -> dict[str, str]:
    stock = _Stock.app
    if stock is None:
        raise ServiceUnavailableException(
            f"stock save() is not configured: start the bare server with {_STOCK_URL}, "
            f"{_STOCK_SCHEMA} and {_STOCK_POOL} (bench.bare.stock_env)"
        )
    dot = _Stock.dot()
    stock.save(dot)
    return {"id": str(dot.id)}


app = Litestar(
    route_handlers=[doc, sse_one, sse_feed, subscribers, publish, stock_save],
    on_startup=[open_stock],
    on_shutdown=[close_stock],
    logging_config=None,
    debug=False,
)
