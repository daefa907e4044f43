"""A lean HTTP/1.1 keep-alive load generator on raw asyncio streams.

On 2 cores a Python client can easily be the bottleneck, so this does the least per request:
requests are prebuilt bytes, a response is one `readuntil` for the head and one
`readexactly` for the body, and nothing is parsed that the figure does not need. The same
code drives NOME and the bare-Litestar baseline, so whatever it costs is in both sides of a
ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """A full collection in the client would show up as server latency: collect before the
    run and not during it (the client makes few cycles; the run is seconds long)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Response(NamedTuple):
    status: int
    head: bytes  # the status line and headers, lower-cased
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """One header's value; `name` lower-case, without the colon."""
        start = self.head.find(b"\r\n" + name + b":")
        if start < 0:
            return None
        start += len(name) + 3
        end = self.head.find(b"\r\n", start)
        return self.head[start:end].strip()


def build(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One request as the bytes to write."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def roundtrip(self, request: bytes) -> Response:
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        mark = head.find(b"\r\ncontent-length:")
        if mark < 0:
            raise RuntimeError("response without content-length: " + head[:200].decode("latin-1"))
        end = head.find(b"\r\n", mark + 17)
        length = int(head[mark + 17 : end])
        body = await self.reader.readexactly(length) if length else b""
        return Response(status, head, body)

    def close(self) -> None:
        self.writer.close()


class LoadResult(NamedTuple):
    """Completions inside the measured window only (warm-up excluded)."""

    ok: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds, of successful requests in the window
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def closed_loop(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    *,
    clients: int,
    warmup: float,
    duration: float,
    on_response: Callable[[Response], None] | None = None,
) -> LoadResult:
    """`clients` connections, each sending its next request as soon as the last one answered."""
    conns = await asyncio.gather(*(Connection.open(host, port) for _ in range(clients)))
    counter = itertools.count()
    begin = time.perf_counter() + warmup
    end = begin + duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tally = [0, 0]  # ok, errors (inside the window)

    async def worker(conn: Connection) -> None:
        perf = time.perf_counter
        while True:
            request = request_for(next(counter))
            sent = perf()
            response = await conn.roundtrip(request)
            done = perf()
            if on_response is not None:
                on_response(response)
            if done >= end:
                return
            if done >= begin:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status < 300:
                    tally[0] += 1
                    latencies.append(done - sent)
                else:
                    tally[1] += 1

    try:
        with no_gc_pauses():
            await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return LoadResult(tally[0], tally[1], duration, latencies, statuses)


async def paced(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    *,
    rate: float,
    duration: float,
    clients: int,
    on_response: Callable[[Response, float, float], None],
) -> LoadResult:
    """Open loop: request i is due at start + i/rate, sent by whichever connection is free.

    `on_response(response, sent, received)` sees every answer with its perf_counter times.
    A request that finds no free connection goes out late; the lateness is part of its latency.
    """
    conns = await asyncio.gather(*(Connection.open(host, port) for _ in range(clients)))
    counter = itertools.count()
    start = time.perf_counter() + 0.05
    end = start + duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tally = [0, 0]

    async def worker(conn: Connection) -> None:
        perf = time.perf_counter
        while True:
            i = next(counter)
            due = start + i / rate
            if due >= end:
                return
            wait = due - perf()
            if wait > 0:
                await asyncio.sleep(wait)
            response = await conn.roundtrip(request_for(i))
            done = perf()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status < 300:
                tally[0] += 1
                latencies.append(done - due)
            else:
                tally[1] += 1
            on_response(response, due, done)

    try:
        with no_gc_pauses():
            await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return LoadResult(tally[0], tally[1], duration, latencies, statuses)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
