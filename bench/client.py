"""A lean HTTP/1.1 keep-alive client and Server-Sent Events reader on raw asyncio streams.

On 2 cores a Python client can easily be the bottleneck, so this does the least per request:
requests are prebuilt bytes, a response is one `readuntil` for the head and one `readexactly`
per body or chunk, and nothing is parsed that a figure does not need. The same code reads NOME
and the bare baselines, so whatever it costs is in both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

HOST = "127.0.0.1"
JSON = {"Content-Type": "application/json"}


def build(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One request as the bytes to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post_json(path: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
    return build("POST", path, body=msgspec.json.encode(body), headers={**(headers or {}), **JSON})


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
        return self.head[start : self.head.find(b"\r\n", start)].strip()


class Connection:
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port, limit=1 << 20))

    async def send(self, request: bytes) -> bytes:
        """Write a request; the answer's head, lower-cased."""
        self.writer.write(request)
        return (await self.reader.readuntil(b"\r\n\r\n")).lower()

    async def roundtrip(self, request: bytes) -> Response:
        head = await self.send(request)
        mark = head.find(b"\r\ncontent-length:")
        if mark >= 0:  # every load figure's path: kept to two reads
            length = int(head[mark + 17 : head.find(b"\r\n", mark + 17)])
            body = await self.reader.readexactly(length) if length else b""
        else:
            body = b"".join([chunk async for chunk in self.body(head)])
        return Response(int(head[9:12]), head, body)

    async def body(self, head: bytes) -> AsyncIterator[bytes]:
        """The answer's body as it arrives: whole, or chunk by chunk when chunked."""
        reader = self.reader
        if b"\r\ntransfer-encoding: chunked" not in head:
            mark = head.find(b"\r\ncontent-length:")
            if mark < 0:
                raise RuntimeError("answer without a length: " + head[:200].decode("latin-1"))
            if length := int(head[mark + 17 : head.find(b"\r\n", mark + 17)]):
                yield await reader.readexactly(length)
            return
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
            yield (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # the end of the (empty) trailer

    def close(self) -> None:
        self.writer.close()


async def call(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str],
    status: int = 200,
) -> Any:
    """The decoded JSON answer of a request that must answer `status`, on a connection of its
    own (uvicorn closes a kept-alive connection after 5 idle seconds)."""
    data = b"" if body is None else msgspec.json.encode(body)
    conn = await Connection.open(port)
    try:
        hdrs = {**headers, **JSON} if body is not None else headers
        response = await conn.roundtrip(build(method, path, body=data, headers=hdrs))
    finally:
        conn.close()
    if response.status != status:
        raise RuntimeError(f"{method} {path}: {response.status} {response.body[:300]!r}")
    return msgspec.json.decode(response.body) if response.body else None


async def read_body(port: int, request: bytes, separator: bytes) -> tuple[int, float, bytes]:
    """One answer read to its end as fast as the client can: (count of `separator`, seconds
    from sending to the last byte, the head). Counted chunk by chunk: reassembling megabytes
    first made the client the limit."""
    conn = await Connection.open(port)
    try:
        sent = time.perf_counter()
        head = await conn.send(request)
        count, tail = 0, b""  # tail: the end of the last chunk, for a split separator
        async for chunk in conn.body(head):
            count += chunk.count(separator) + (tail + chunk[: len(separator) - 1]).count(separator)
            tail = chunk[1 - len(separator) :] if len(separator) > 1 else b""
        if int(head[9:12]) != 200:
            raise RuntimeError(f"{head[:12]!r}")
        return count, time.perf_counter() - sent, head
    finally:
        conn.close()


class Frame(NamedTuple):
    """One SSE frame (comments dropped) and when its bytes arrived."""

    raw: bytes  # without the closing blank line
    perf: float  # for intervals measured by this process
    wall: float  # for comparison with the server's `at` stamps (one machine, one clock)

    def field(self, name: bytes) -> bytes:
        """A field's value (`id`, `event`, `data`), or b"" when the frame has none."""
        if self.raw.startswith(name + b": "):
            start = len(name) + 2
        elif (start := self.raw.find(b"\n" + name + b": ")) >= 0:
            start += len(name) + 3
        else:
            return b""
        end = self.raw.find(b"\n", start)
        return self.raw[start:] if end < 0 else self.raw[start:end]

    @property
    def event(self) -> bytes:
        return self.field(b"event")

    @property
    def at(self) -> float:
        """The envelope's `at` in epoch seconds (the first `"at"` of the data line), else 0."""
        start = self.raw.find(b'"at":"') + 6
        if start < 6:
            return 0.0
        return datetime.fromisoformat(
            self.raw[start : self.raw.find(b'"', start)].decode()
        ).timestamp()

    def data(self) -> Any:
        return msgspec.json.decode(self.field(b"data"))


class EventStream:
    """One request whose answer is read as SSE frames, each stamped with its chunk's arrival;
    the connection stays reusable when the stream was read to its end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._chunks: AsyncIterator[bytes] | None = None
        self._buffer = b""
        self._pending: list[Frame] = []

    async def open(self, request: bytes) -> None:
        """Send the request and read the answer's head; raises unless it is a 200."""
        head = await self.conn.send(request)
        self._chunks = self.conn.body(head)
        if int(head[9:12]) != 200:
            body = b"".join([chunk async for chunk in self._chunks])
            raise RuntimeError(f"{head[9:12].decode()}: {body[:300]!r}")

    async def next(self) -> Frame | None:
        """The next frame, or None when the stream has ended."""
        assert self._chunks is not None, "open() first"
        while not self._pending:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                return None
            perf, wall = time.perf_counter(), time.time()
            *frames, self._buffer = (self._buffer + chunk).split(b"\n\n")
            self._pending += [Frame(f, perf, wall) for f in frames if f and f[:1] != b":"]
        return self._pending.pop(0)

    async def until(self, event: bytes) -> list[Frame]:
        """Frames up to and including the first `event` one; raises if the stream ends first."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
            if frame.event == event:
                return frames
        raise RuntimeError(
            f"the stream ended without {event.decode()}: {[f.event for f in frames]}"
        )

    async def drain(self) -> list[Frame]:
        """Every frame left, to the end of the stream."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
        return frames
