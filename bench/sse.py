"""A lean Server-Sent Events client on the same raw keep-alive connections as loadgen.

A streamed response (`text/event-stream`, chunked by uvicorn) is read one chunk at a time and
every complete frame is stamped with the time its chunk arrived: `perf_counter` for
intervals measured by this process, `time.time` for comparison with the server's `at`
timestamps (one machine, one wall clock). Nothing is decoded that a figure does not need: a
frame's `id`, `event` and `at` are found by byte search; JSON is decoded only on request.
The same code reads NOME and the bare-Litestar baselines.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from bench.loadgen import Connection, Response


class StreamFailed(Exception):
    """The server answered with something other than a 200 event stream."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status}: {response.body[:300]!r}")
        self.response = response


class Frame(NamedTuple):
    """One SSE frame (comments are dropped) and when its bytes arrived."""

    raw: bytes  # without the closing blank line
    perf: float
    wall: float

    def field(self, name: bytes) -> bytes:
        """A field's value (`id`, `event`, `data`), or b"" when the frame has none."""
        start = 0 if self.raw.startswith(name + b": ") else self.raw.find(b"\n" + name + b": ")
        if start < 0:
            return b""
        if start:
            start += 1
        start += len(name) + 2
        end = self.raw.find(b"\n", start)
        return self.raw[start:] if end < 0 else self.raw[start:end]

    @property
    def event(self) -> bytes:
        return self.field(b"event")

    @property
    def seq(self) -> int:
        raw = self.field(b"id")
        return int(raw) if raw else 0

    @property
    def at(self) -> bytes:
        """The envelope's `at` (the first `"at"` key of the data line precedes `data`)."""
        start = self.raw.find(b'"at":"')
        if start < 0:
            return b""
        start += 6
        return self.raw[start : self.raw.find(b'"', start)]

    def data(self) -> Any:
        return msgspec.json.decode(self.field(b"data"))


_wall_cache: dict[bytes, float] = {}


def wall_of(at: bytes) -> float:
    """Seconds since the epoch of an RFC 3339 `...T..:..:..ffffffZ` stamp (memoised)."""
    value = _wall_cache.get(at)
    if value is None:
        moment = datetime.strptime(at.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        value = _wall_cache[at] = moment.timestamp()
    return value


class EventStream:
    """One request whose answer is read as SSE frames; the connection stays reusable when
    the stream was read to its end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.head = b""
        self.chunked = False
        self.ended = False
        self._buffer = b""
        self._pending: list[Frame] = []
        self._left = -1  # bytes left of a content-length body, -1 for chunked

    async def open(self, request: bytes) -> bytes:
        """Send the request and read the answer's head; raises StreamFailed unless 200."""
        reader = self.conn.reader
        self.conn.writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        self.head = head
        status = int(head[9:12])
        self.chunked = b"\r\ntransfer-encoding: chunked" in head
        if not self.chunked:
            mark = head.find(b"\r\ncontent-length:")
            length = int(head[mark + 17 : head.find(b"\r\n", mark + 17)]) if mark >= 0 else 0
            if status != 200:
                body = await reader.readexactly(length) if length else b""
                raise StreamFailed(Response(status, head, body))
            self._left = length
        elif status != 200:
            raise StreamFailed(Response(status, head, await self._rest()))
        return head

    def header(self, name: bytes) -> bytes | None:
        return Response(0, self.head, b"").header(name)

    async def _rest(self) -> bytes:
        parts = []
        while (chunk := await self._chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def _chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        reader = self.conn.reader
        if not self.chunked:
            if self._left <= 0:
                return None
            data = await reader.read(self._left)
            if not data:
                raise ConnectionError("the server closed the stream")
            self._left -= len(data)
            return data
        line = await reader.readuntil(b"\r\n")
        size = int(line[:-2].split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return None
        return (await reader.readexactly(size + 2))[:-2]

    async def next(self) -> Frame | None:
        """The next frame, or None when the stream has ended."""
        while not self._pending:
            if self.ended:
                return None
            chunk = await self._chunk()
            perf, wall = time.perf_counter(), time.time()
            if chunk is None:
                self.ended = True
                return None
            buffer = self._buffer + chunk
            start = 0
            while (end := buffer.find(b"\n\n", start)) >= 0:
                raw = buffer[start:end]
                start = end + 2
                if raw and not raw.startswith(b":"):
                    self._pending.append(Frame(raw, perf, wall))
            self._buffer = buffer[start:]
        return self._pending.pop(0)

    async def until(self, *events: bytes) -> list[Frame]:
        """Frames up to and including the first of one of these event types (or the end)."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
            if frame.event in events:
                break
        return frames

    async def drain(self) -> list[Frame]:
        """Every frame left, to the end of the stream."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
        return frames
