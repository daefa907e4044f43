"""Figures 5-10: streaming, runs, replay and export against NOME's API process (its projector
and worker run in a second process, as deployed), and their bare baselines. Called by
bench/run.py; `run` is its Run (phase(), args, admin key, schema).

Tenants: figures 5, 7 and 10 use the bootstrap tenant (so the export's rows are all that
tenant's and the export and the raw read cover the same rows); figure 8 and figures 6 and 9
each get a tenant of their own, because a free-plan tenant has 1,000 credits and every run
costs at least one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio

from bench import live, loadgen, runlog
from bench.export_bench import measure_export
from bench.loadgen import Connection
from bench.report import Figure
from bench.servers import Server
from bench.sse import EventStream, wall_of

HOST = "127.0.0.1"
PROJECTIONS = ("agents", "approvals", "keys", "runs", "tenants", "threads", "tools")
TOOL_LINE = '/tool math.evaluate {"expression": "6*7"}'
# Words of the long answer that 200 subscribers watch (about 6 characters each).
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda"]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def wait_projections(
    watch: redis.asyncio.Redis, prefix: str, target: int, *, within: float = 60
) -> float:
    """Until every projection has processed position `target`; returns the seconds waited."""
    keys = [f"{prefix}proj:{name}:position" for name in PROJECTIONS]
    started = time.monotonic()
    while True:
        values = await watch.mget(keys)
        if all(int(v or 0) >= target for v in values):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            behind = {n: int(v or 0) for n, v in zip(PROJECTIONS, values, strict=True)}
            raise RuntimeError(f"projections did not reach {target} within {within}s: {behind}")
        await asyncio.sleep(0.005)


async def tenant_auth(run: Any, server: Server, name: str) -> tuple[str, dict[str, str]]:
    tenant_id, key = await runlog.create_tenant(run.pg_url, run.schema, name)
    auth = {"Authorization": f"Bearer {key}"}
    await server.ready("/v1/bootstrap", headers=auth, within=30)
    return tenant_id, auth


# -- baselines on the bare server ---------------------------------------------------------


async def bare_first_frame(run: Any, port: int) -> dict[str, Any]:
    a = run.args
    run.phase(f"baseline 5: bare SSE route, one frame at once, {a.chats} sequential POSTs")
    request = live.post_json("/sse/one", {"input": "hello bench"})
    result = await live.first_frame(
        HOST, port, lambda _i: request, count=a.chats, warmup=max(5, a.chats // 20)
    )
    q = result["first_frame"]
    run.phase(f"  first frame p50 {q['p50_ms']:.2f} ms, p99 {q['p99_ms']:.2f} ms")
    return result


async def bare_fanout(
    run: Any, port: int, schedule: list[tuple[float, int]], pid: int | None = None
) -> live.Fanout:
    a = run.args
    run.phase(
        f"baseline 6: bare SSE fan-out of NOME's {len(schedule)} frames "
        f"(same sizes and offsets) to {a.subscribers} subscribers"
    )
    result = await live.bare_fanout(HOST, port, schedule, subscribers=a.subscribers, server_pid=pid)
    s = result.summary()
    run.phase(
        f"  lag from publish p50 {s['lag_from_at']['p50_ms']:.1f} ms, "
        f"p99 {s['lag_from_at']['p99_ms']:.1f} ms over {result.deliveries:,} deliveries "
        f"({result.incomplete} incomplete subscribers; CPU s over "
        f"{result.seconds:.2f} s: client {result.client_cpu:.2f}, server {result.server_cpu:.2f})"
    )
    return result


# -- NOME ---------------------------------------------------------------------------------


async def nome_streaming(
    run: Any, server: Server, watch: redis.asyncio.Redis, others: Sequence[Server] = ()
) -> dict[str, Any]:
    """Against the API process `server`; `others` (the projector/worker process) count only
    in figure 6's server CPU, which sums every process of the deployment."""
    a = run.args
    port = server.port
    pids = (server.pid, *(other.pid for other in others))
    auth = {"Authorization": f"Bearer {run.admin_key}"}
    out: dict[str, Any] = {}
    boot = await live.expect(HOST, port, "GET", "/v1/bootstrap", headers=auth)
    default_tenant = boot["tenant"]["id"]

    # Figure 5 ------------------------------------------------------------------------
    run.phase(
        f"figure 5: POST /v1/chat/stream to the first message.delta, {a.chats} sequential "
        f"chats (scripted provider, a few words each)"
    )
    chats = [
        live.post_json("/v1/chat/stream", {"input": f"hello bench chat number {i} ok"}, auth)
        for i in range(a.chats + max(5, a.chats // 20))
    ]
    out["chat"] = chat = await live.first_frame(
        HOST, port, lambda i: chats[i], count=a.chats, warmup=max(5, a.chats // 20)
    )
    q, h = chat["first_frame"], chat["head"]
    run.phase(
        f"  first delta p50 {q['p50_ms']:.1f} ms, p99 {q['p99_ms']:.1f} ms, max "
        f"{q['max_ms']:.1f} ms (response head p50 {h['p50_ms']:.1f} ms; whole run p50 "
        f"{chat['whole_stream']['p50_ms']:.1f} ms)"
    )
    stages = chat_stages(chat["timelines"])
    run.phase(
        "  p50/p99 ms by stage: "
        + "; ".join(
            f"{name.replace('_', ' ')} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}"
            for name, v in stages.items()
        )
    )

    # Figure 7 ------------------------------------------------------------------------
    run.phase(f"figure 7: replay of a {a.replay_events:,}-event run: inserting its events")
    thread = await live.expect(
        HOST, port, "POST", "/v1/threads", status=201, body={"title": "replay"}, headers=auth
    )
    run_id, last, inserted = await asyncio.to_thread(
        runlog.insert_run,
        run.pg_url,
        run.schema,
        default_tenant,
        thread["id"],
        events=a.replay_events,
    )
    waited = await wait_projections(watch, run.prefix, last)
    run.phase(
        f"  inserted in {inserted:.2f} s; read models caught up {waited:.2f} s later; "
        f"GET /v1/runs/{{id}}/replay (SSE, then NDJSON) vs SELECT of the run's rows, best of 3"
    )
    replay_sse = replay_nd = raw_stream = None
    for _ in range(3):
        got = await live.read_body(
            HOST, port, loadgen.build("GET", f"/v1/runs/{run_id}/replay", headers=auth), b"\n\n"
        )
        if replay_sse is None or got[2] < replay_sse[2]:
            replay_sse = got
        got = await live.read_body(
            HOST,
            port,
            loadgen.build("GET", f"/v1/runs/{run_id}/replay?format=ndjson", headers=auth),
            b"\n",
        )
        if replay_nd is None or got[2] < replay_nd[2]:
            replay_nd = got
        raw = await asyncio.to_thread(
            runlog.raw_stream_select, run.pg_url, run.schema, run_id, repeat=1
        )
        if raw_stream is None or raw.seconds < raw_stream.seconds:
            raw_stream = raw
    assert replay_sse and replay_nd and raw_stream
    if replay_sse[0] != a.replay_events or replay_nd[0] != a.replay_events:
        raise RuntimeError(
            f"replay returned {replay_sse[0]} SSE frames / {replay_nd[0]} lines, "
            f"expected {a.replay_events}"
        )
    out["replay"] = {
        "events": a.replay_events,
        "insert_s": inserted,
        "sse_s": replay_sse[2],
        "sse_bytes": replay_sse[1],
        "sse_events_per_s": replay_sse[0] / replay_sse[2],
        "ndjson_s": replay_nd[2],
        "ndjson_bytes": replay_nd[1],
        "ndjson_events_per_s": replay_nd[0] / replay_nd[2],
        "raw_select": raw_stream._asdict(),
        "raw_rows_per_s": raw_stream.rate,
    }
    run.phase(
        f"  SSE {replay_sse[0] / replay_sse[2]:,.0f} events/s ({replay_sse[2]:.3f} s), "
        f"NDJSON {replay_nd[0] / replay_nd[2]:,.0f} events/s; raw SELECT "
        f"{raw_stream.rate:,.0f} rows/s ({raw_stream.seconds:.3f} s)"
    )

    # Figure 10 -----------------------------------------------------------------------
    run.phase(
        "figure 10: GET /v1/audit/export (whole tenant log, NDJSON) vs SELECT state of the "
        "same rows, alternated, best of 3"
    )
    export_request = loadgen.build("GET", "/v1/audit/export", headers=auth)
    export = raw_log = None
    for _ in range(3):
        got = await live.read_body(HOST, port, export_request, b"\n")
        if export is None or got[2] < export[2]:
            export = got
        until = int(loadgen.Response(0, got[3], b"").header(b"x-nome-position") or 0)
        raw = await asyncio.to_thread(
            runlog.raw_log_select, run.pg_url, run.schema, until, repeat=1
        )
        if raw_log is None or raw.seconds < raw_log.seconds:
            raw_log = raw
    assert export and raw_log
    out["export"] = {
        "events": export[0],
        "rows": raw_log.ops,
        "bytes": export[1],
        "export_s": export[2],
        "export_events_per_s": export[0] / export[2],
        "raw_select": raw_log._asdict(),
        "raw_rows_per_s": raw_log.rate,
    }
    run.phase(
        f"  export {export[0]:,} events in {export[2]:.3f} s = {export[0] / export[2]:,.0f} "
        f"events/s; raw {raw_log.ops:,} rows in {raw_log.seconds:.3f} s = "
        f"{raw_log.rate:,.0f} rows/s"
    )
    run.phase("  diagnostic: the same export in-process, no HTTP (bench/export_bench.py)")
    try:
        inproc = await asyncio.to_thread(
            measure_export, run.pg_url, run.schema, default_tenant, repeat=3
        )
        out["export_inprocess"] = inproc
        run.phase(
            f"  in-process {inproc['export_events_per_s']:,.0f} events/s vs raw "
            f"{inproc['raw_rows_per_s']:,.0f} rows/s ({inproc['ratio']:.2f}x)"
        )
    except Exception as exc:  # a colleague's module: its failure must not sink the run
        out["export_inprocess"] = {"error": repr(exc)}
        run.phase(f"  export_bench failed: {exc!r}")

    # Figure 8 ------------------------------------------------------------------------
    run.phase(
        f"figure 8: POST /v1/chat with one math.evaluate call, {a.tool_clients} clients "
        "(own tenant: credits)"
    )
    _, tools_auth = await tenant_auth(run, server, "bench-tools")
    out["tools"] = await tool_calls(run, port, tools_auth)
    t = out["tools"]
    run.phase(
        f"  {t['rate']:,.0f} completed runs/s ({t['errors']} errors, {t['not_completed']} "
        f"not completed; latency p50 {t['latency_p50_ms']:.1f} ms, "
        f"p99 {t['latency_p99_ms']:.1f} ms)"
    )

    # Figures 9 and 6 -----------------------------------------------------------------
    run.phase("figures 9 and 6: own tenant; PUT /v1/tools/policies/math.evaluate approval required")
    _, approvals_auth = await tenant_auth(run, server, "bench-approvals")
    policy = await live.expect(
        HOST,
        port,
        "PUT",
        "/v1/tools/policies/math.evaluate",
        body={"approval": "required"},
        headers=approvals_auth,
    )
    if policy.get("approval") != "required":
        raise RuntimeError(f"the policy did not change: {policy}")
    run.phase(
        f"figure 9: POST /v1/approvals/{{id}}/approve to tool.completed on the live stream, "
        f"{a.approvals} sequential approvals"
    )
    out["approvals"] = appr = await live.approval_latency(
        HOST,
        port,
        approvals_auth,
        count=a.approvals,
        warmup=max(3, a.approvals // 10),
        tool_line=TOOL_LINE,
    )
    q, p = appr["approve_to_tool_completed"], appr["approve_post"]
    run.phase(
        f"  to tool.completed p50 {q['p50_ms']:.1f} ms, p99 {q['p99_ms']:.1f} ms; approve "
        f"POST p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms"
    )

    run.phase(
        f"figure 6: {a.subscribers} subscribers of GET /v1/runs/{{id}}/stream on one run "
        f"waiting on an approval, then approved ({a.fanout_words:,}-word answer)"
    )
    out["fanout"] = fan = await nome_fanout(run, port, approvals_auth, pids)
    s = fan.summary()
    run.phase(
        f"  lag from `at` p50 {s['lag_from_at']['p50_ms']:.1f} ms, p99 "
        f"{s['lag_from_at']['p99_ms']:.1f} ms; spread from first subscriber p99 "
        f"{s['spread_from_first_subscriber']['p99_ms']:.1f} ms; {fan.frames} frames x "
        f"{fan.subscribers} = {fan.deliveries:,} deliveries ({fan.incomplete} incomplete; "
        f"CPU s over {fan.seconds:.2f} s: client {fan.client_cpu:.2f}, "
        f"server {fan.server_cpu:.2f} summed over {len(pids)} process(es))"
    )
    return out


async def tool_calls(run: Any, port: int, auth: dict[str, str]) -> dict[str, Any]:
    a = run.args
    request = live.post_json("/v1/chat", {"input": f"x\n{TOOL_LINE}"}, auth)
    checked = [0, 0]  # answers with the tool's result, 2xx answers without it

    def check(response: loadgen.Response) -> None:
        body = response.body
        if (
            response.status == 200
            and b'"tools_invoked":["math.evaluate"]' in body
            and b'"status":"completed"' in body
        ):
            checked[0] += 1
            return
        if response.status < 300:
            checked[1] += 1

    result = await loadgen.closed_loop(
        HOST,
        port,
        lambda _i: request,
        clients=a.tool_clients,
        warmup=a.warmup,
        duration=a.seconds,
        on_response=check,
    )
    return {
        "rate": result.rate,
        "ok": result.ok,
        "errors": result.errors,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "not_completed": checked[1],
        "latency_p50_ms": loadgen.percentile(result.latencies, 50) * 1000,
        "latency_p99_ms": loadgen.percentile(result.latencies, 99) * 1000,
        "clients": a.tool_clients,
    }


def chat_stages(timelines: list[tuple[float, list[tuple[bytes, bytes, float]]]]) -> dict[str, Any]:
    """The wait for the first delta split at the server's `at` stamps (taken when an event is
    sealed, before its commit): creating thread and run; projector, worker pick-up and
    run.started; the model turn up to the delta; the delta's commit, tail read and delivery."""
    stages: dict[str, list[float]] = {
        "post_to_run_created_at": [],
        "run_created_to_run_started_at": [],
        "run_started_to_delta_at": [],
        "delta_at_to_arrival": [],
    }
    for sent, frames in timelines:
        at = {event: wall_of(stamp) for event, stamp, _ in frames if stamp}
        needed = (b"run.created", b"run.started", b"message.delta")
        if not all(n in at for n in needed):
            continue
        stages["post_to_run_created_at"].append(at[b"run.created"] - sent)
        stages["run_created_to_run_started_at"].append(at[b"run.started"] - at[b"run.created"])
        stages["run_started_to_delta_at"].append(at[b"message.delta"] - at[b"run.started"])
        stages["delta_at_to_arrival"].append(frames[-1][2] - at[b"message.delta"])
    return {name: live.quantiles(values) for name, values in stages.items()}


def long_input(words: int) -> str:
    text = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    return f"{TOOL_LINE}\n{text[:99_000]}"


async def nome_fanout(
    run: Any, port: int, auth: dict[str, str], pid: int | Sequence[int | None] | None = None
) -> live.Fanout:
    """One run asks for an approval; `subscribers` streams of it read up to the ask; then it
    is approved and each stream is read to the run's end."""
    a = run.args
    starter, approver = await asyncio.gather(*(Connection.open(HOST, port) for _ in range(2)))
    try:
        stream = EventStream(starter)
        await stream.open(
            live.post_json("/v1/chat/stream", {"input": long_input(a.fanout_words)}, auth)
        )
        seen = await stream.until(b"approval.requested")
        if not seen or seen[-1].event != b"approval.requested":
            raise RuntimeError(f"no approval was requested: {[f.event for f in seen]}")
        envelope = seen[-1].data()
        run_id, approval_id = envelope["run_id"], envelope["data"]["approval_id"]
        starter.close()  # the run goes on without its chat stream
        await live.until_found(approver, f"/v1/approvals/{approval_id}", headers=auth)
        approver.close()

        async def trigger() -> None:
            await live.expect(
                HOST, port, "POST", f"/v1/approvals/{approval_id}/approve", body={}, headers=auth
            )

        return await live.fanout(
            HOST,
            port,
            loadgen.build("GET", f"/v1/runs/{run_id}/stream", headers=auth),
            subscribers=a.subscribers,
            ready=b"approval.requested",
            trigger=trigger,
            server_pid=pid,
        )
    finally:
        starter.close()
        approver.close()


# -- the table ------------------------------------------------------------------------------


def figures(
    live_out: dict[str, Any],
    bare_first: dict[str, Any],
    bare_fan: live.Fanout,
    thread_creations: float,
) -> tuple[list[Figure], dict[str, Any]]:
    """Figures 5-10 and the details that go with them in results.json."""
    chat, fan = live_out["chat"], live_out["fanout"]
    replay, export = live_out["replay"], live_out["export"]
    tools, appr = live_out["tools"], live_out["approvals"]
    first, bare_q = chat["first_frame"], bare_first["first_frame"]
    nome_lag, bare_lag = fan.summary()["lag_from_at"], bare_fan.summary()["lag_from_at"]
    to_tool, post = appr["approve_to_tool_completed"], appr["approve_post"]
    export_rate = export["export_events_per_s"]
    out = [
        Figure(
            "5 chat/stream to 1st delta p50 vs bare SSE",
            first["p50_ms"],
            "ms",
            bare_q["p50_ms"],
            "bare SSE 1st frame p50 ms",
            target="",
            met=None,
        ),
        Figure(
            "5 chat/stream to 1st delta p99 vs bare SSE",
            first["p99_ms"],
            "ms",
            bare_q["p99_ms"],
            "bare SSE 1st frame p99 ms",
            target="< 50 ms",
            met=first["p99_ms"] < 50,
        ),
        Figure(
            f"6 fan-out lag p50, {fan.subscribers} subscribers vs bare",
            nome_lag["p50_ms"],
            "ms",
            bare_lag["p50_ms"],
            "bare SSE fan-out lag p50 ms",
            target="",
            met=None,
        ),
        Figure(
            f"6 fan-out lag p99, {fan.subscribers} subscribers vs bare",
            nome_lag["p99_ms"],
            "ms",
            bare_lag["p99_ms"],
            "bare SSE fan-out lag p99 ms",
            target="< 100 ms",
            met=nome_lag["p99_ms"] < 100 and fan.incomplete == 0,
        ),
        Figure(
            "7 replay events/s vs raw stream SELECT",
            replay["sse_events_per_s"],
            "/s",
            replay["raw_rows_per_s"],
            "SELECT of the run's rows/s",
            target=">= 50,000/s",
            met=replay["sse_events_per_s"] >= 50_000,
        ),
        Figure(
            "8 chat+tool runs/s vs thread creations/s",
            tools["rate"],
            "/s",
            thread_creations,
            "POST /v1/threads/s (figure 1)",
            target="",
            met=None,
        ),
        Figure(
            "9 approve to tool.completed p50 vs POST",
            to_tool["p50_ms"],
            "ms",
            post["p50_ms"],
            "approve POST latency p50 ms",
            target="",
            met=None,
        ),
        Figure(
            "9 approve to tool.completed p99 vs POST",
            to_tool["p99_ms"],
            "ms",
            post["p99_ms"],
            "approve POST latency p99 ms",
            target="",
            met=None,
        ),
        Figure(
            "10 audit export events/s vs raw SELECT",
            export_rate,
            "/s",
            export["raw_rows_per_s"],
            "SELECT of the same rows/s",
            target=">= 0.5x",
            met=export["raw_rows_per_s"] > 0 and export_rate / export["raw_rows_per_s"] >= 0.5,
        ),
    ]
    chat_details = {k: v for k, v in chat.items() if k not in ("latencies", "timelines")}
    chat_details["stages"] = chat_stages(chat["timelines"])
    bare_details = {k: v for k, v in bare_first.items() if k not in ("latencies", "timelines")}
    details = {
        "chat_first_delta": chat_details,
        "bare_sse_first_frame": bare_details,
        "fanout": fan.summary(),
        "bare_fanout": bare_fan.summary(),
        "replay": replay,
        "tool_calls": tools,
        "approvals": appr,
        "export": export,
        "export_inprocess": live_out.get("export_inprocess"),
    }
    return out, details
