"""The measured window and the load generators that fill it.

Every rate and latency of the bench comes out of one `Window`: after a warm-up, completions
are counted for a fixed time and their latencies kept. The drivers below only decide how work
is offered (HTTP clients in a closed loop, HTTP at a fixed pace, threads, asyncio tasks);
whatever a driver costs, it costs the same on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from bench.client import Connection, Response


class Window:
    """Warm-up, then a fixed measured window. `record` is thread-safe (list appends only)."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.warmup, self.seconds = warmup, seconds
        self.begin = self.end = math.inf  # until start(): nothing counts, nothing stops
        self.latencies: list[float] = []  # seconds, of successes inside the window
        self.failures: list[int] = []  # statuses of failures inside the window

    def start(self) -> None:
        """Called by a driver once its clients are connected, so set-up is not warm-up."""
        self.begin = time.perf_counter() + self.warmup
        self.end = self.begin + self.seconds

    def stop(self) -> None:
        self.end = -math.inf

    def record(self, sent: float, status: int) -> bool:
        """One completion (status < 300 is a success); False once the window is over."""
        done = time.perf_counter()
        if done >= self.end:
            return False
        if done >= self.begin:
            if status < 300:
                self.latencies.append(done - sent)
            else:
                self.failures.append(status)
        return True

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def problem(self) -> str:
        """What makes the window's figures incomplete, "" when nothing does."""
        if self.failures:
            return f"{len(self.failures)} failed"
        return "" if self.latencies else "nothing succeeded"

    def summary(self, unit: str) -> str:
        return (
            f"{self.rate:,.0f} {unit} ({len(self.failures)} errors, "
            f"p50 {self.ms(50):.1f} ms, p99 {self.ms(99):.1f} ms)"
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """A full collection in the client would show as server latency: none during a run."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def concurrently(clients: int, window: Window, op: Callable[[int], Awaitable[int]]) -> Window:
    """`clients` tasks, each awaiting `op(client)` again as soon as the last one finished,
    until the window ends; `op` returns a status (< 300 is a success)."""

    async def client(i: int) -> None:
        perf = time.perf_counter
        while True:
            sent = perf()
            if not window.record(sent, await op(i)):
                return

    window.start()
    with no_gc_pauses():
        await asyncio.gather(*(client(i) for i in range(clients)))
    return window


async def closed_loop(
    port: int,
    request_for: Callable[[int], bytes],
    *,
    clients: int,
    window: Window,
    on_response: Callable[[Response], None] | None = None,
) -> Window:
    """`clients` keep-alive connections, each sending request `request_for(i)` as soon as
    its last answer arrived."""
    conns = await asyncio.gather(*(Connection.open(port) for _ in range(clients)))
    counter = itertools.count()

    async def op(client: int) -> int:
        response = await conns[client].roundtrip(request_for(next(counter)))
        if on_response is not None:
            on_response(response)
        return response.status

    try:
        return await concurrently(clients, window, op)
    finally:
        for conn in conns:
            conn.close()


async def paced(
    port: int,
    request: bytes,
    *,
    rate: float,
    seconds: float,
    clients: int,
    on_response: Callable[[Response, float, float], None],
) -> Window:
    """Open loop: request i is due at start + i/rate and sent by whichever connection is free;
    a late one's lateness is part of its latency. `on_response(response, due, done)` sees
    every answer (a few still in flight at the window's end are not in the window)."""
    conns = await asyncio.gather(*(Connection.open(port) for _ in range(clients)))
    window = Window(0.05, seconds)
    counter = itertools.count()

    async def client(conn: Connection) -> None:
        perf = time.perf_counter
        while (due := window.begin + next(counter) / rate) < window.end:
            if (wait := due - perf()) > 0:
                await asyncio.sleep(wait)
            response = await conn.roundtrip(request)
            window.record(due, response.status)
            on_response(response, due, perf())

    window.start()
    try:
        with no_gc_pauses():
            await asyncio.gather(*(client(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return window


def threads(prepare: Callable[[], Callable[[], object]], *, clients: int, window: Window) -> Window:
    """`clients` threads, each repeating the operation `prepare()` made it (its connection is
    made before the window starts); an exception counts as a failure."""
    ready = threading.Barrier(clients + 1)
    failed: list[Exception] = []

    def run() -> None:
        try:
            op = prepare()
        except Exception as exc:
            failed.append(exc)
            return
        finally:
            ready.wait()
        perf = time.perf_counter
        while True:
            sent = perf()
            try:
                op()
                status = 200
            except Exception:
                status = 500
            if not window.record(sent, status):
                return

    workers = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=60)
        if failed:
            raise RuntimeError("a load thread could not start") from failed[0]
        window.start()
        for worker in workers:
            worker.join()
    finally:
        # Also on Ctrl-C: no thread may still hold a connection when the schema is dropped.
        window.stop()
        ready.abort()
        for worker in workers:
            worker.join(timeout=30)
    return window
