"""Figure 5: POST /v1/chat/stream to its first `message.delta`, 200 sequential chats (scripted
provider, a few words each), read against a bare Litestar route that streams one frame at once.
The wait is also split at the server's `at` stamps, to say which stage costs what."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.client import Connection, EventStream, Frame, post_json
from bench.context import Bench, Figure, latencies
from bench.load import no_gc_pauses, percentile


async def first_frames(
    port: int, request_for: Callable[[int], bytes], count: int, warmup: int
) -> list[tuple[float, float, list[Frame]]]:
    """Per measured stream (after `warmup` unmeasured ones), each read to its end on one
    connection: (wall clock sent, perf sent, frames up to the first message.delta)."""
    conn = await Connection.open(port)
    out = []
    try:
        with no_gc_pauses():
            for i in range(warmup + count):
                stream = EventStream(conn)
                wall, sent = time.time(), time.perf_counter()
                await stream.open(request_for(i))
                frames = await stream.until(b"message.delta")
                await stream.drain()
                if i >= warmup:
                    out.append((wall, sent, frames))
    finally:
        conn.close()
    return out


def stages(streams: list[tuple[float, float, list[Frame]]]) -> str:
    """p50/p99 of each stage of the wait, split at the `at` stamps (taken when an event is
    sealed, before its commit): thread and run created; projector, worker pick-up and
    run.started; the model turn; the delta's commit, tail read and delivery."""
    split: dict[str, list[float]] = {}
    for wall, _, frames in streams:
        at = {f.event: f.at for f in frames if f.at}
        if {b"run.created", b"run.started", b"message.delta"} <= at.keys():
            marks = [
                ("post to run.created", wall, at[b"run.created"]),
                ("to run.started", at[b"run.created"], at[b"run.started"]),
                ("to delta", at[b"run.started"], at[b"message.delta"]),
                ("delta to arrival", at[b"message.delta"], frames[-1].wall),
            ]
            for name, start, end in marks:
                split.setdefault(name, []).append(end - start)
    q = percentile
    return "; ".join(f"{k} {q(v, 50) * 1000:.1f}/{q(v, 99) * 1000:.1f}" for k, v in split.items())


async def measure(bench: Bench) -> list[Figure]:
    count = bench.args.chats
    warmup = max(5, count // 20)
    bench.phase(f"baseline: bare SSE route, one frame at once, {count} sequential POSTs")
    one = post_json("/sse/one", {"input": "hello bench"})
    bare = await first_frames(bench.servers.bare().port, lambda _: one, count, warmup)
    bench.phase(f"figure 5: POST /v1/chat/stream to the first message.delta, {count} chats")
    chats = [
        post_json("/v1/chat/stream", {"input": f"hello bench chat number {i} ok"}, bench.admin)
        for i in range(warmup + count)
    ]
    nome = await first_frames(bench.servers.nome().port, lambda i: chats[i], count, warmup)
    figures = latencies(
        "5 chat/stream to 1st delta {q} vs bare SSE",
        [frames[-1].perf - sent for _, sent, frames in nome],
        "bare SSE 1st frame {q} ms",
        [frames[-1].perf - sent for _, sent, frames in bare],
        "< 50 ms",
    )
    p50, p99 = figures
    bench.phase(
        f"  first delta p50 {p50.value:.1f} ms, p99 {p99.value:.1f} ms; bare "
        f"{p50.baseline:.2f}, {p99.baseline:.2f} ms"
    )
    bench.phase(f"  p50/p99 ms by stage: {stages(nome)}")
    return figures
