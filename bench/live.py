"""Streaming and run figures over HTTP: time to first frame, SSE fan-out, approvals, tool-call
round trips, replay and audit export throughput.

Every function takes a host and port, so the same code measures `nome serve` and the bare
baselines (bench/bare.py) with the same client (bench/loadgen.py, bench/sse.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from bench import loadgen
from bench.loadgen import Connection, Response, no_gc_pauses, percentile
from bench.sse import EventStream, Frame, wall_of

JSON = {"Content-Type": "application/json"}


def post_json(path: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
    return loadgen.build(
        "POST", path, body=msgspec.json.encode(body), headers={**(headers or {}), **JSON}
    )


async def call(
    conn: Connection, method: str, path: str, *, body: Any = None, headers: dict[str, str]
) -> Response:
    """One plain request/response on a kept-alive connection."""
    data = b"" if body is None else msgspec.json.encode(body)
    hdrs = {**headers, **JSON} if body is not None else headers
    return await conn.roundtrip(loadgen.build(method, path, body=data, headers=hdrs))


async def expect(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    status: int | tuple[int, ...] = 200,
    body: Any = None,
    headers: dict[str, str],
) -> Any:
    """The decoded JSON answer of a request that must answer `status`, on a connection of its
    own (uvicorn closes a kept-alive connection after 5 idle seconds)."""
    conn = await Connection.open(host, port)
    try:
        response = await call(conn, method, path, body=body, headers=headers)
    finally:
        conn.close()
    wanted = status if isinstance(status, tuple) else (status,)
    if response.status not in wanted:
        raise RuntimeError(f"{method} {path}: {response.status} {response.body[:300]!r}")
    return msgspec.json.decode(response.body) if response.body else None


async def until_found(
    conn: Connection, path: str, *, headers: dict[str, str], within: float = 10.0
) -> float:
    """Poll GET `path` until 200 (a read model has caught up); returns the seconds waited."""
    started = time.perf_counter()
    request = loadgen.build("GET", path, headers=headers)
    while True:
        response = await conn.roundtrip(request)
        if response.status == 200:
            return time.perf_counter() - started
        if response.status != 404 or time.perf_counter() - started > within:
            raise RuntimeError(f"GET {path}: {response.status} {response.body[:300]!r}")
        await asyncio.sleep(0.002)


def quantiles(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds, and the sample count."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p90_ms": percentile(seconds, 90) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds, default=0.0) * 1000,
        "samples": len(seconds),
    }


# -- time to first frame ----------------------------------------------------------------


async def first_frame(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    *,
    count: int,
    warmup: int,
    wanted: bytes = b"message.delta",
) -> dict[str, Any]:
    """`count` sequential streamed requests (after `warmup` unmeasured ones), each read to its
    end: the time from sending the request to the arrival of its first `wanted` frame, and to
    the arrival of the response head."""
    conn = await Connection.open(host, port)
    first: list[float] = []
    heads: list[float] = []
    whole: list[float] = []
    frames = 0
    # Per measured stream: the wall-clock send time and (event, `at`, arrival) of each frame
    # up to the wanted one, so a caller can split the wait at the server's own timestamps.
    timelines: list[tuple[float, list[tuple[bytes, bytes, float]]]] = []
    try:
        with no_gc_pauses():
            for i in range(warmup + count):
                stream = EventStream(conn)
                sent_wall = time.time()
                sent = time.perf_counter()
                await stream.open(request_for(i))
                head = time.perf_counter()
                seen = await stream.until(wanted)
                if not seen or seen[-1].event != wanted:
                    got = [f.event.decode() for f in seen]
                    raise RuntimeError(f"the stream ended without a {wanted.decode()}: {got}")
                rest = await stream.drain()
                if i >= warmup:
                    first.append(seen[-1].perf - sent)
                    heads.append(head - sent)
                    whole.append(time.perf_counter() - sent)
                    frames += len(seen) + len(rest)
                    timelines.append((sent_wall, [(f.event, f.at, f.wall) for f in seen]))
    finally:
        conn.close()
    return {
        "first_frame": quantiles(first),
        "head": quantiles(heads),
        "whole_stream": quantiles(whole),
        "frames_per_stream": frames / count if count else 0.0,
        "latencies": first,
        "timelines": timelines,
    }


# -- fan-out ----------------------------------------------------------------------------


class Fanout(NamedTuple):
    subscribers: int
    frames: int  # frames after the trigger, per subscriber (the most any got)
    deliveries: int
    incomplete: int  # subscribers that got fewer frames than that
    lag_at: list[float]  # arrival (wall clock) minus the frame's `at`
    lag_by_type: dict[str, list[float]]
    spread: list[float]  # arrival minus the first arrival of the same frame at any subscriber
    schedule: list[tuple[float, int]]  # per frame: `at` after the first frame's, size in bytes
    seconds: float  # trigger to the last arrival
    client_cpu: float  # this process's CPU seconds from the trigger to the last arrival
    server_cpu: float  # the server processes' CPU seconds over the same time (from /proc)

    def summary(self) -> dict[str, Any]:
        return {
            "subscribers": self.subscribers,
            "frames_per_subscriber": self.frames,
            "deliveries": self.deliveries,
            "incomplete_subscribers": self.incomplete,
            "lag_from_at": quantiles(self.lag_at),
            "lag_from_at_by_type": {t: quantiles(v) for t, v in self.lag_by_type.items()},
            "spread_from_first_subscriber": quantiles(self.spread),
            "frame_bytes_mean": (
                sum(s for _, s in self.schedule) / len(self.schedule) if self.schedule else 0
            ),
            "produced_over_s": self.schedule[-1][0] if self.schedule else 0.0,
            "trigger_to_last_arrival_s": self.seconds,
            "client_cpu_s": self.client_cpu,
            "server_cpu_s": self.server_cpu,
        }


async def fanout(
    host: str,
    port: int,
    request: bytes,
    *,
    subscribers: int,
    ready: bytes,
    trigger: Callable[[], Awaitable[object]],
    server_pid: int | Sequence[int | None] | None = None,
    within: float = 60.0,
) -> Fanout:
    """`subscribers` streams of the same request; each reads up to its `ready` frame, then,
    once all have, `trigger()` starts the frames to measure; each stream is read to its end."""
    conns: list[Connection] = []
    for start in range(0, subscribers, 50):  # not all SYNs at once into the listen backlog
        conns += await asyncio.gather(
            *(Connection.open(host, port) for _ in range(min(50, subscribers - start)))
        )
    counted = [0]
    all_ready = asyncio.Event()
    received: list[list[Frame]] = [[] for _ in conns]

    async def follow(i: int, conn: Connection) -> None:
        stream = EventStream(conn)
        await stream.open(request)
        seen = await stream.until(ready)
        if not seen or seen[-1].event != ready:
            raise RuntimeError(f"stream {i} ended before its {ready.decode()} frame")
        counted[0] += 1
        if counted[0] == len(conns):
            all_ready.set()
        received[i] = await stream.drain()

    try:
        with no_gc_pauses():
            tasks = [asyncio.create_task(follow(i, c)) for i, c in enumerate(conns)]
            waiter = asyncio.create_task(all_ready.wait())
            try:
                async with asyncio.timeout(within):
                    while not all_ready.is_set():
                        done, _ = await asyncio.wait(
                            [waiter, *tasks], return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in done:
                            if task is not waiter and task.exception() is not None:
                                raise task.exception()  # type: ignore[misc]
                    cpu0, server0 = time.process_time(), process_cpu(server_pid)
                    triggered = time.perf_counter()
                    await trigger()
                    await asyncio.gather(*tasks)
                    cpu1, server1 = time.process_time(), process_cpu(server_pid)
            finally:
                waiter.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(waiter, *tasks, return_exceptions=True)
    finally:
        for conn in conns:
            conn.close()

    most = max((len(r) for r in received), default=0)
    firsts: dict[int, float] = {}
    for frames in received:
        for frame in frames:
            seq = frame.seq
            if seq not in firsts or frame.perf < firsts[seq]:
                firsts[seq] = frame.perf
    lag_at: list[float] = []
    lag_by_type: dict[str, list[float]] = {}
    spread: list[float] = []
    last = triggered
    for frames in received:
        for frame in frames:
            lag = frame.wall - wall_of(frame.at)
            lag_at.append(lag)
            lag_by_type.setdefault(frame.event.decode(), []).append(lag)
            spread.append(frame.perf - firsts[frame.seq])
            last = max(last, frame.perf)
    reference = max(received, key=len) if received else []
    origin = wall_of(reference[0].at) if reference else 0.0
    schedule = [(wall_of(f.at) - origin, len(f.raw) + 2) for f in reference]
    return Fanout(
        subscribers=len(conns),
        frames=most,
        deliveries=len(lag_at),
        incomplete=sum(1 for r in received if len(r) < most),
        lag_at=lag_at,
        lag_by_type=lag_by_type,
        spread=spread,
        schedule=schedule,
        seconds=last - triggered,
        client_cpu=cpu1 - cpu0,
        server_cpu=server1 - server0,
    )


def process_cpu(pid: int | Sequence[int | None] | None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), 0.0 if unknown; of
    several processes summed (the API process and the projector/worker process)."""
    if pid is None:
        return 0.0
    if not isinstance(pid, int):
        return sum(process_cpu(p) for p in pid)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bare_fanout(
    host: str,
    port: int,
    schedule: list[tuple[float, int]],
    *,
    subscribers: int,
    server_pid: int | None = None,
) -> Fanout:
    """The bare route's fan-out of frames of NOME's sizes at NOME's offsets."""
    name = f"feed{time.monotonic_ns()}"

    async def trigger() -> None:
        await expect(
            host,
            port,
            "POST",
            f"/sse/feed/{name}/publish",
            status=202,
            body={"frames": schedule},
            headers={},
        )

    return await fanout(
        host,
        port,
        loadgen.build("GET", f"/sse/feed/{name}"),
        subscribers=subscribers,
        ready=b"hello",
        trigger=trigger,
        server_pid=server_pid,
    )


# -- approvals --------------------------------------------------------------------------


async def approval_latency(
    host: str,
    port: int,
    auth: dict[str, str],
    *,
    count: int,
    warmup: int,
    tool_line: str,
) -> dict[str, Any]:
    """Sequential chats whose tool call waits on an approval: the time from sending
    POST /v1/approvals/{id}/approve to the arrival of the run's `tool.completed` frame on the
    chat's live stream (opened before the approval), and the approve POST's own latency."""
    chat_conn, control, approver = await asyncio.gather(
        *(Connection.open(host, port) for _ in range(3))
    )
    chat = post_json("/v1/chat/stream", {"input": f"{tool_line}\napproved"}, auth)
    to_tool: list[float] = []
    to_answer: list[float] = []
    visible: list[float] = []
    try:
        with no_gc_pauses():
            for i in range(warmup + count):
                stream = EventStream(chat_conn)
                await stream.open(chat)
                seen = await stream.until(b"approval.requested")
                if not seen or seen[-1].event != b"approval.requested":
                    raise RuntimeError(f"no approval was requested: {[f.event for f in seen]}")
                approval_id = seen[-1].data()["data"]["approval_id"]
                # The approve route looks the approval up in its read model: wait for it, so
                # what is timed is the approval, not the projector catching up with the ask.
                visible.append(
                    await until_found(control, f"/v1/approvals/{approval_id}", headers=auth)
                )
                request = post_json(f"/v1/approvals/{approval_id}/approve", {}, auth)
                sent = time.perf_counter()
                answered = asyncio.create_task(_timed_roundtrip(approver, request))
                done = await stream.until(b"tool.completed")
                response, at = await answered
                if response.status != 200:
                    raise RuntimeError(f"approve: {response.status} {response.body[:200]!r}")
                if not done or done[-1].event != b"tool.completed":
                    raise RuntimeError(f"no tool.completed: {[f.event for f in done]}")
                await stream.drain()
                if i >= warmup:
                    to_tool.append(done[-1].perf - sent)
                    to_answer.append(at - sent)
    finally:
        for conn in (chat_conn, control, approver):
            conn.close()
    return {
        "approve_to_tool_completed": quantiles(to_tool),
        "approve_post": quantiles(to_answer),
        "approval_visible_after_request": quantiles(visible),
    }


async def _timed_roundtrip(conn: Connection, request: bytes) -> tuple[Response, float]:
    response = await conn.roundtrip(request)
    return response, time.perf_counter()


# -- whole bodies (replay, export) ------------------------------------------------------


async def read_body(
    host: str, port: int, request: bytes, separator: bytes
) -> tuple[int, int, float, bytes]:
    """One GET read to its end as fast as the client can: (count of `separator`, bytes,
    seconds from sending to the last byte, the response head)."""
    conn = await Connection.open(host, port)
    try:
        sent = time.perf_counter()
        conn.writer.write(request)
        reader = conn.reader
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        if b"\r\ntransfer-encoding: chunked" not in head:
            mark = head.find(b"\r\ncontent-length:")
            length = int(head[mark + 17 : head.find(b"\r\n", mark + 17)]) if mark >= 0 else 0
            body = await reader.readexactly(length) if length else b""
            if status != 200:
                raise RuntimeError(f"{status}: {body[:300]!r}")
            return body.count(separator), len(body), time.perf_counter() - sent, head
        # Chunk by chunk straight from the stream's buffer: reassembling a growing buffer
        # from reads copied each ~1.6 MB chunk over and over and made the client the limit.
        count = size = 0
        overlap = len(separator) - 1
        tail = b""  # the end of the last chunk, for a separator split across two chunks
        while True:
            length = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if length == 0:
                await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
                break
            data = await reader.readexactly(length + 2)
            count += data.count(separator, 0, length)
            if overlap:
                count += (tail + data[:overlap]).count(separator)
                tail = data[max(0, length - overlap) : length]
            size += length
        if status != 200:
            raise RuntimeError(f"{status}")
        return count, size, time.perf_counter() - sent, head
    finally:
        conn.close()
