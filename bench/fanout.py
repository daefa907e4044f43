"""Figure 6: 200 subscribers of GET /v1/runs/{id}/stream on one run that waits on an approval,
then is approved and streams a 12,000-word answer: delivery lag, each frame's arrival minus its
`at`. Read against a bare SSE fan-out replaying NOME's frames (same sizes, same offsets, as
measured here) to as many subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bench.approvals import approval_tenant, until_found
from bench.chat_tools import TOOL_LINE
from bench.client import Connection, EventStream, Frame, build, call, post_json
from bench.context import Bench, Figure, latencies
from bench.load import no_gc_pauses

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda"]


async def fanout(
    bench: Bench, port: int, request: bytes, ready: bytes, trigger: Callable[[], Awaitable[object]]
) -> list[list[Frame]]:
    """Every subscriber reads up to its `ready` frame; then `trigger()` starts the frames that
    are measured, and each stream is read to its end. The frames each subscriber got."""
    subscribers = bench.args.subscribers
    conns: list[Connection] = []
    for start in range(0, subscribers, 50):  # not every SYN at once into the listen backlog
        count = min(50, subscribers - start)
        conns += await asyncio.gather(*(Connection.open(port) for _ in range(count)))
    streams = [EventStream(conn) for conn in conns]

    async def subscribe(stream: EventStream) -> None:
        await stream.open(request)
        await stream.until(ready)

    try:
        with no_gc_pauses():
            await asyncio.wait_for(asyncio.gather(*map(subscribe, streams)), 60)
            reading = [asyncio.ensure_future(stream.drain()) for stream in streams]
            await trigger()
            return await asyncio.wait_for(asyncio.gather(*reading), 60)
    finally:
        for conn in conns:
            conn.close()


def lags(received: list[list[Frame]]) -> tuple[list[float], str]:
    """Every delivery's arrival minus its frame's `at`, and a note if a subscriber missed some."""
    most = max(map(len, received), default=0)
    short = sum(1 for frames in received if len(frames) < most)
    values = [frame.wall - frame.at for frames in received for frame in frames]
    return values, f"{short} subscribers missed frames" if short else ""


async def measure(bench: Bench) -> list[Figure]:
    subscribers, words = bench.args.subscribers, bench.args.fanout_words
    bench.phase(f"figure 6: {subscribers} subscribers of one run's stream, {words:,}-word answer")
    api = bench.servers.nome()
    auth = await approval_tenant(bench, "approvals", api.port)  # figure 9's
    # One run asks for an approval; the subscribers read up to the ask; then it is approved.
    text = " ".join(WORDS[i % len(WORDS)] for i in range(words))[:99_000]
    starter = await Connection.open(api.port)
    stream = EventStream(starter)
    await stream.open(post_json("/v1/chat/stream", {"input": f"{TOOL_LINE}\n{text}"}, auth))
    asked = (await stream.until(b"approval.requested"))[-1].data()
    starter.close()  # the run goes on without its chat stream
    run_id, approval = asked["run_id"], asked["data"]["approval_id"]
    checker = await Connection.open(api.port)
    await until_found(checker, f"/v1/approvals/{approval}", auth)
    checker.close()

    async def approve() -> None:
        await call(api.port, "POST", f"/v1/approvals/{approval}/approve", body={}, headers=auth)

    tail = build("GET", f"/v1/runs/{run_id}/stream", headers=auth)
    got = await fanout(bench, api.port, tail, b"approval.requested", approve)
    nome, problem = lags(got)

    # The bare fan-out replays what one subscriber saw: each frame's offset and size.
    frames = max(got, key=len)
    schedule = [(f.at - frames[0].at, len(f.raw) + 2) for f in frames]
    bench.phase(f"baseline: bare SSE fan-out of the same {len(schedule)} frames")
    # NOME is still busy finishing the run: stopped, so that the baseline has the machine to
    # itself (free: the next figures start another NOME anyway).
    bench.servers.stop_nome()
    port = bench.servers.bare().port

    async def publish() -> None:
        path, body = "/sse/feed/nome/publish", {"frames": schedule}
        await call(port, "POST", path, body=body, headers={}, status=202)

    got = await fanout(bench, port, build("GET", "/sse/feed/nome"), b"hello", publish)
    bare, bare_problem = lags(got)
    figures = latencies(
        f"6 fan-out lag {{q}}, {subscribers} subscribers vs bare",
        nome,
        "bare SSE fan-out lag {q} ms",
        bare,
        "< 100 ms",
        problem or bare_problem,
    )
    p50, p99 = figures
    bench.phase(
        f"  lag p50 {p50.value:.1f} ms, p99 {p99.value:.1f} ms; bare {p50.baseline:.1f}, "
        f"{p99.baseline:.1f} ms"
    )
    return figures
