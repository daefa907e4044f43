"""Figure 9: POST /v1/approvals/{id}/approve to the run's `tool.completed` on the chat's live
stream (opened before the approval), 50 sequential chats whose tool call needs an approval,
read against the approve POST's own latency."""

from __future__ import annotations

import asyncio
import time

from bench.chat_tools import TOOL_LINE
from bench.client import Connection, EventStream, build, call, post_json
from bench.context import Bench, Figure, latencies
from bench.load import no_gc_pauses


async def approval_tenant(bench: Bench, name: str, port: int) -> dict[str, str]:
    """A tenant of its own (credits) whose math.evaluate calls wait on an approval."""
    auth = bench.servers.tenant(name)
    path, body = "/v1/tools/policies/math.evaluate", {"approval": "required"}
    policy = await call(port, "PUT", path, body=body, headers=auth)
    if policy.get("approval") != "required":
        raise RuntimeError(f"the policy did not change: {policy}")
    return auth


async def until_found(conn: Connection, path: str, auth: dict[str, str]) -> None:
    """Poll GET `path` until 200: the approve route reads the approval from its read model,
    so what is timed is the approval, not the projector catching up with the ask."""
    request, deadline = build("GET", path, headers=auth), time.monotonic() + 10
    while (response := await conn.roundtrip(request)).status != 200:
        if response.status != 404 or time.monotonic() > deadline:
            raise RuntimeError(f"GET {path}: {response.status} {response.body[:300]!r}")
        await asyncio.sleep(0.002)


async def measure(bench: Bench) -> list[Figure]:
    count = bench.args.approvals
    bench.phase(f"figure 9: approve to tool.completed on the live stream, {count} approvals")
    port = bench.servers.nome().port
    auth = await approval_tenant(bench, "approvals", port)
    chat = post_json("/v1/chat/stream", {"input": f"{TOOL_LINE}\napproved"}, auth)
    conns = await asyncio.gather(*(Connection.open(port) for _ in range(3)))
    streaming, control, approver = conns
    warmup = max(3, count // 10)
    to_tool: list[float] = []
    to_answer: list[float] = []

    async def approve(approval: str) -> float:
        """The approve POST, on its own connection while the stream is read; when answered."""
        response = await approver.roundtrip(
            post_json(f"/v1/approvals/{approval}/approve", {}, auth)
        )
        if response.status != 200:
            raise RuntimeError(f"approve: {response.status} {response.body[:200]!r}")
        return time.perf_counter()

    try:
        with no_gc_pauses():
            for i in range(warmup + count):
                stream = EventStream(streaming)
                await stream.open(chat)
                asked = (await stream.until(b"approval.requested"))[-1].data()
                approval = asked["data"]["approval_id"]
                await until_found(control, f"/v1/approvals/{approval}", auth)
                sent = time.perf_counter()
                answered = asyncio.create_task(approve(approval))
                done = (await stream.until(b"tool.completed"))[-1].perf
                answered_at = await answered
                await stream.drain()
                if i >= warmup:
                    to_tool.append(done - sent)
                    to_answer.append(answered_at - sent)
    finally:
        for conn in conns:
            conn.close()
    figures = latencies(
        "9 approve to tool.completed {q} vs POST", to_tool, "approve POST latency {q} ms", to_answer
    )
    p50, p99 = figures
    bench.phase(
        f"  p50 {p50.value:.1f} ms, p99 {p99.value:.1f} ms; POST {p50.baseline:.1f}, "
        f"{p99.baseline:.1f} ms"
    )
    return figures
