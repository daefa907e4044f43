"""GET /v1/account/usage with 100,000 runs of one tenant in the log, spread over 90 days: its
latency over every day and over the last 30 (`?start=&end=`), read against GET /v1/bootstrap
of the same tenant on the same server (it reads the same account, not the usage); the three
alternated from one client, one request at a time: a latency, not a queue. The issue: p99 <
20 ms.

The runs are sealed straight into the log, as bench/internals.py writes figure 7's run (and
like it, the one use here of NOME's internals): no chat makes 100,000 runs in a minute. Each is
what a settled run leaves: `run.created` and `run.completed` with its usage on its own stream,
and on the tenant's account stream its `credits.reserved`, then `credits.consumed` and
`credits.released`, in the order a run's commits leave them, so the accounts read model counts
it as it counts a real one. Their `at` is set, evenly over the last 90 days, so the report
has 90 days to read. None took a run slot and nothing admits them: no worker would pick one
up, so NOME serves the `api` and `projector` roles only (bench/runs_one_tenant.py), and no
worker's log follower reads the 500,000 events beside the projector catching up on them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bench import internals
from bench.client import Connection, build, call
from bench.context import Bench, Figure, latencies
from bench.load import Window, no_gc_pauses
from bench.runs_one_tenant import enterprise_tenants, without_worker
from bench.servers import Server

DAYS = 90
TIERS = ("fast", "standard", "deep")
AGENTS = [str(uuid.UUID(int=i + 1)) for i in range(8)]  # usage is also reported by agent
BATCH = 1000  # runs per insert


class Frozen:
    """A clock whose time is set by the caller (the seeded events' `at`) and whose ids are
    a random UUID's first 24 characters and a counter: 600,000 `uuid4()`s took seconds."""

    def __init__(self) -> None:
        self.at = ""
        self._prefix, self._ids = str(uuid.uuid4())[:24], itertools.count()

    def now(self) -> str:
        return self.at

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids):012x}"


def seed(
    env: dict[str, str], tenant_id: str, thread_id: str, runs: int, progress: Callable[[int], None]
) -> int:
    """`runs` settled runs of the tenant over the last DAYS days, oldest first, written in
    batches of BATCH runs and sealed as the application seals them (ids, times, chains);
    `progress(runs written)` after each batch. The position of the last event."""
    from nome_core.accounts import decide
    from nome_core.accounts.events import CreditsConsumed, CreditsReleased, CreditsReserved
    from nome_core.accounts.state import account_stream_id
    from nome_core.clock import format_time
    from nome_core.events import Client, Head, Meta, head_of, seal
    from nome_core.runs import events as ev
    from nome_core.runs.scripted import MODEL
    from nome_core.tenants.plans import MAX_RUN_COST

    store = internals.runtime(env).store
    clock, meta = Frozen(), Meta(principal="bench")
    account = account_stream_id(tenant_id)
    account_head = head_of(store.load(account))  # the starting grant is there already
    snapshot = ev.AgentSnapshot(provider="scripted", model=MODEL, instructions="", tools=[])
    first = datetime.now(UTC) - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / runs

    def sealed(drafts: list[Any], stream: str, head: Head, run_id: str | None) -> list[Any]:
        return seal(
            drafts,
            stream_id=stream,
            head=head,
            tenant_id=tenant_id,
            thread_id=thread_id if run_id else None,
            run_id=run_id,
            meta=meta,
            clock=clock,
        )

    def one_run(i: int) -> list[Any]:
        """A run's five events in the order their commits would leave them."""
        nonlocal account_head
        run_id, tier, agent = clock.new_id(), TIERS[i % 3], AGENTS[i % len(AGENTS)]
        tokens = (200 + i % 700, 50 + i % 400)  # in, out: a few cost more than the minimum
        charge, held = decide.cost(tier, sum(tokens)), MAX_RUN_COST[tier]
        usage = ev.Usage(input_tokens=tokens[0], output_tokens=tokens[1], credits=charge)
        started = first + step * i
        clock.at = format_time(started)
        made = ev.RunCreated(
            input="bench: a settled run",
            agent_id=agent,
            tier=tier,
            domain_hints=[],
            client=Client(surface="bench"),
            agent=snapshot,
            creator_roles=["admin"],
        )
        created = sealed([made], run_id, Head(), run_id)
        hold = CreditsReserved(run_id=run_id, amount=held)
        reserved = sealed([hold], account, account_head, None)
        clock.at = format_time(started + timedelta(seconds=2))
        ended = sealed(
            [ev.RunCompleted(usage=usage, output="done")], run_id, head_of(created), run_id
        )
        settled = sealed(
            [
                CreditsConsumed(run_id=run_id, amount=charge),
                CreditsReleased(run_id=run_id, amount=held - charge),
            ],
            account,
            head_of(reserved),
            None,
        )
        account_head = head_of(settled)
        return [*created, *reserved, *ended, *settled]

    try:
        return internals.insert_seeded(store, runs, BATCH, one_run, progress)
    finally:
        store.close()


def caught_up(bench: Bench, position: int, within: float = 180) -> float:
    """Until every read model has applied `position`: the seconds waited. Bench's
    wait_projections, with a progress line every 5 s: catching up takes a while."""
    keys = list(internals.position_keys(bench.nome_env).values())
    client = redis.Redis.from_url(bench.redis_url)
    started = shown = time.monotonic()
    try:
        while (behind := min(int(v or 0) for v in client.mget(keys))) < position:
            now = time.monotonic()
            if now - started > within:
                raise RuntimeError(f"read models not at {position} after {within}s")
            if now - shown >= 5:
                bench.phase(f"  read models at {behind:,} of {position:,}")
                shown = now
            time.sleep(0.05)
    finally:
        client.close()
    return time.monotonic() - started


async def alternated(
    bench: Bench, port: int, paths: list[str], auth: dict[str, str]
) -> list[Window]:
    """GET each of `paths` in turn from one client, one request at a time, so a load spike
    from elsewhere hits them alike: a window each, as long as all of theirs one after the
    other would be."""
    windows = [Window(bench.args.warmup, bench.args.seconds * len(paths)) for _ in paths]
    requests = [build("GET", path, headers=auth) for path in paths]
    conn = await Connection.open(port)
    perf = time.perf_counter
    try:
        for window in windows:
            window.start()
        with no_gc_pauses():
            for i in itertools.cycle(range(len(paths))):
                sent = perf()
                if not windows[i].record(sent, (await conn.roundtrip(requests[i])).status):
                    break
    finally:
        conn.close()
    for path, window in zip(paths, windows, strict=True):
        bench.phase(f"  {path}: p50 {window.ms(50):.1f} ms, p99 {window.ms(99):.1f} ms")
    return windows


async def measure(bench: Bench) -> list[Figure]:
    runs = bench.args.usage_runs
    bench.phase("usage: NOME's api and projector, no worker; making the tenant")
    with without_worker(bench) as api:
        return await usage_of(bench, api, runs)


async def usage_of(bench: Bench, api: Server, runs: int) -> list[Figure]:
    (auth,) = await enterprise_tenants(bench, api, ["usage"])
    tenant = (await call(api.port, "GET", "/v1/bootstrap", headers=auth))["tenant"]["id"]
    body = {"title": "usage"}
    thread = await call(api.port, "POST", "/v1/threads", body=body, headers=auth, status=201)
    bench.phase(f"usage: sealing {runs:,} settled runs over {DAYS} days into the log")
    started = time.perf_counter()

    def progress(done: int) -> None:
        if done % (runs // 5 or 1) < BATCH or done == runs:
            bench.phase(f"  {done:,} runs ({time.perf_counter() - started:.1f} s)")

    last = await asyncio.to_thread(seed, bench.nome_env, tenant, thread["id"], runs, progress)
    waited = await asyncio.to_thread(caught_up, bench, last)
    bench.phase(f"  read models caught up {waited:.1f} s after the last insert")
    report = await call(api.port, "GET", "/v1/account/usage", headers=auth)
    counted = sum(day["runs"] for day in report["by_day"])
    problem = "" if counted == runs else f"usage counts {counted:,} of {runs:,} runs"
    bench.phase(f"  usage over {len(report['by_day'])} days, {counted:,} runs")
    today = datetime.now(UTC).date()  # the days of the report are UTC days
    month = f"start={today - timedelta(days=29)}&end={today}"
    bench.phase(f"usage report over {DAYS} days, over 30, and GET /v1/bootstrap, alternated")
    every, last_30, boot = await alternated(
        bench, api.port, ["/v1/account/usage", f"/v1/account/usage?{month}", "/v1/bootstrap"], auth
    )
    return [
        *latencies(
            f"usage report {{q}}, {runs:,} runs over {DAYS} days",
            every.latencies,
            "GET /v1/bootstrap {q} ms",
            boot.latencies,
            "< 20 ms",
            problem or every.problem or boot.problem,
        ),
        *latencies(
            "usage report {q}, the last 30 days",
            last_30.latencies,
            "GET /v1/bootstrap {q} ms",
            boot.latencies,
            "< 20 ms",
            problem or last_30.problem or boot.problem,
        ),
    ]
