"""The benchmark run: phases in order, each printed as it starts, then the table and JSON.

Order matters: the database baselines run before any server exists, NOME runs alone for the
HTTP figures (the bare baseline is stopped before it starts), and the rebuild runs after its
servers have stopped, so its runner does not compete for the projections' leases.

NOME's figures run on the deployed topology of compose.yaml: the API in one process
(`nome serve --role api`) and the projector and the run worker in a second one
(`nome serve --role projector --role worker`). That is the shape NOME is deployed in, and
it matters here: in one all-roles process, request handling and projection share one GIL, so
POST /v1/threads measured about a quarter slower on this bench's 2-core machine. The
all-roles rate is kept as a diagnostic.

1. raw INSERT and in-process stock save() baselines (Postgres only; the in-process stock
   rate, 32 threads calling save() with no HTTP, is a diagnostic);
2. the bare Litestar server: GET route, then the stock save() route (baseline 1c), then the
   one-frame SSE route (baseline 5). Baseline 1c is what figure 1's ">= 3x" is read against,
   because that is how the issue defining the figure measured the stock rate: a bare Litestar
   app on uvicorn (one worker, 32 clients) doing a direct eventsourcing save() of a one-event
   aggregate per request, driven here by the same load generator, clients, warm-up and
   duration as figure 1;
3. diagnostic: one all-roles `nome serve` (api + projector + worker in one process), figure
   1's POST load against it; it is stopped once the read models have caught up;
4. NOME as deployed: `nome serve --role api`, and once it answers /v1/health (it creates the
   event table; two processes creating it at once collide), `nome serve --role projector
   --role worker` on a port of its own; figures 1-3, then the streaming and run figures of
   bench/streaming.py (5 first delta, 7 replay, 10 export, 8 tool calls, 9 approvals,
   6 fan-out, whose server CPU sums both processes), all against the API process;
5. the bare server again: the fan-out baseline, replaying figure 6's measured schedule;
6. in-process create_thread, then the rebuild (figure 4) and its raw SELECT baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import platform
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import redis
import redis.asyncio
from psycopg import sql

from bench import baselines, loadgen, streaming
from bench.bare import stock_env
from bench.inprocess import create_threads
from bench.rebuild import rebuild_all
from bench.report import Figure, table
from bench.servers import Server, bare_server, free_port, nome_server
from nome_api.logging import configure

PG_URL = os.environ.get("NOME_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOME_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).with_name("results.json")
HOST = "127.0.0.1"


class Run:
    """One run's identity (schema, key prefix, admin key) and everything it must clean up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = f"bench_{uuid.uuid4().hex[:12]}"
        self.schema = self.tag
        self.prefix = f"{self.tag}:"
        self.admin_key = "nome_sk_" + secrets.token_urlsafe(32)
        self.servers: list[Server] = []
        self.started = time.perf_counter()
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.pg_url = PG_URL

    def phase(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {text}", flush=True)

    def nome_env(self) -> dict[str, str]:
        return {
            "NOME_DATABASE_URL": PG_URL,
            "NOME_DATABASE_SCHEMA": self.schema,
            "NOME_REDIS_URL": REDIS_URL,
            "NOME_REDIS_PREFIX": self.prefix,
            "NOME_BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "NOME_LOG_LEVEL": "warning",
            "NOME_RATE_LIMIT": "100000000",
        }

    def cleanup(self) -> None:
        """Servers first (they write to the schema), then the schema, then the Redis keys."""
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                print(f"cleanup: stopping {server.name} failed: {exc}", file=sys.stderr)
        try:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
                )
        except Exception as exc:
            print(f"cleanup: dropping schema {self.schema} failed: {exc}", file=sys.stderr)
        try:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.unlink(*keys[i : i + 500])
            client.close()
        except Exception as exc:
            print(f"cleanup: removing Redis keys {self.prefix}* failed: {exc}", file=sys.stderr)
        self.phase(f"cleaned up schema {self.schema} and Redis keys {self.prefix}*")


# -- phases -----------------------------------------------------------------------------


def database_baselines(run: Run) -> tuple[baselines.Rate, baselines.Rate]:
    a = run.args
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(run.schema)))
    run.phase(f"baseline 1a: raw one-row INSERT transactions, {a.clients} connections")
    raw = baselines.raw_inserts(
        PG_URL, run.schema, clients=a.clients, warmup=a.warmup, duration=a.seconds
    )
    run.phase(f"  {raw.rate:,.0f} tx/s ({raw.errors} errors)")
    run.phase(f"baseline 1b: stock eventsourcing save() of a new aggregate, {a.clients} threads")
    stock = baselines.stock_saves(
        PG_URL, run.schema, clients=a.clients, warmup=a.warmup, duration=a.seconds
    )
    run.phase(f"  {stock.rate:,.0f} saves/s ({stock.errors} errors)")
    return raw, stock


async def bare_route(
    run: Run,
) -> tuple[loadgen.LoadResult, loadgen.LoadResult, dict[str, Any]]:
    """The GET route, the stock save() route (baseline 1c) and the one-frame SSE route."""
    a = run.args
    server = bare_server(free_port(), stock_env(PG_URL, run.schema, pool=a.clients))
    run.servers.append(server)
    run.phase(f"baseline 2: bare Litestar GET route (one uvicorn worker), {a.clients} clients")
    server.start()
    try:
        await server.ready("/doc/x")
        run.phase(f"  ready on port {server.port} (pid {server.pid})")
        request = loadgen.build("GET", "/doc/0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11")
        result = await loadgen.closed_loop(
            HOST,
            server.port,
            lambda _i: request,
            clients=a.clients,
            warmup=a.warmup,
            duration=a.seconds,
        )
        run.phase(f"  {result.rate:,.0f} req/s ({result.errors} errors)")
        run.phase(
            "baseline 1c: stock eventsourcing save() per request behind a bare Litestar route, "
            f"{a.clients} clients"
        )
        save = loadgen.build("POST", "/stock/save")
        stock = await loadgen.closed_loop(
            HOST,
            server.port,
            lambda _i: save,
            clients=a.clients,
            warmup=a.warmup,
            duration=a.seconds,
        )
        run.phase(
            f"  {stock.rate:,.0f} saves/s ({stock.errors} errors, "
            f"p50 {ms(loadgen.percentile(stock.latencies, 50))} ms, "
            f"p99 {ms(loadgen.percentile(stock.latencies, 99))} ms)"
        )
        if not stock.ok:
            raise RuntimeError(f"no stock save() succeeded: statuses {stock.statuses}")
        first = await streaming.bare_first_frame(run, server.port)
    finally:
        server.stop()
    return result, stock, first


async def bare_fanout(run: Run, schedule: list[tuple[float, int]]) -> Any:
    """Started again after NOME's processes stopped: it replays NOME's measured schedule."""
    server = bare_server(free_port())
    run.servers.append(server)
    server.start()
    try:
        await server.ready("/doc/x")
        return await streaming.bare_fanout(run, server.port, schedule, server.pid)
    finally:
        server.stop()


def create_request(run: Run) -> bytes:
    """Figure 1's request: POST /v1/threads with the admin key."""
    return loadgen.build(
        "POST",
        "/v1/threads",
        body=b'{"title":"bench thread","metadata":{"source":"bench"}}',
        headers={"Authorization": f"Bearer {run.admin_key}", "Content-Type": "application/json"},
    )


async def create_load(
    run: Run, port: int, ids: list[str] | None = None
) -> tuple[loadgen.LoadResult, int]:
    """Figure 1's load: closed-loop POST /v1/threads; the highest position acknowledged, and
    up to 2,000 of the new threads' ids in `ids`."""
    a = run.args
    create = create_request(run)
    last = [0]

    def collect(response: loadgen.Response) -> None:
        if response.status != 201:
            return
        position = response.header(b"x-nome-position")
        if position is not None:
            last[0] = max(last[0], int(position))
        if ids is not None and len(ids) < 2000:
            ids.append(msgspec.json.decode(response.body)["id"])

    result = await loadgen.closed_loop(
        HOST,
        port,
        lambda _i: create,
        clients=a.clients,
        warmup=a.warmup,
        duration=a.seconds,
        on_response=collect,
    )
    run.phase(
        f"  {result.rate:,.0f} creations/s ({result.errors} errors, "
        f"p50 {ms(loadgen.percentile(result.latencies, 50))} ms, "
        f"p99 {ms(loadgen.percentile(result.latencies, 99))} ms)"
    )
    if not result.ok:
        raise RuntimeError(f"no thread was created: statuses {result.statuses}")
    return result, last[0]


async def nome_all_in_one(run: Run) -> loadgen.LoadResult:
    """Diagnostic: figure 1's load against one all-roles `nome serve`, where request handling,
    projection and the worker share one process (and one GIL)."""
    a = run.args
    server = nome_server(free_port(), run.nome_env())
    run.servers.append(server)
    auth = {"Authorization": f"Bearer {run.admin_key}"}
    run.phase("diagnostic: starting one all-roles nome serve (api + projector + worker)")
    server.start()
    watch = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await server.ready("/v1/health")
        # 200 only once the bootstrap key has reached the keys read model.
        await server.ready("/v1/threads?limit=1", headers=auth)
        run.phase(f"  ready on port {server.port} (pid {server.pid})")
        run.phase(
            "diagnostic: thread creations in one all-roles nome serve process, "
            f"POST /v1/threads, {a.clients} clients"
        )
        result, last = await create_load(run, server.port)
        # The deployed processes then start on read models that have caught up.
        waited = await streaming.wait_projections(watch, run.prefix, last)
        run.phase(f"  read models caught up {waited:.2f} s after the load")
    finally:
        run.phase("stopping the all-roles nome serve")
        server.stop()
        await watch.aclose()
    return result


async def nome_figures(run: Run) -> dict[str, Any]:
    """Figures 1-3 and the streaming figures against NOME as deployed: an API process, and
    the projector and worker in a second process."""
    a = run.args
    env = run.nome_env()
    api = nome_server(free_port(), env, roles=("api",))
    back = nome_server(free_port(), env, roles=("projector", "worker"))
    run.servers += [api, back]
    auth = {"Authorization": f"Bearer {run.admin_key}"}
    run.phase("starting nome serve --role api (one uvicorn worker)")
    api.start()
    watch = redis.asyncio.Redis.from_url(REDIS_URL)
    position_key = f"{run.prefix}proj:threads:position"
    try:
        # One after the other: two processes creating the event table at once collide.
        await api.ready("/v1/health")
        run.phase(f"  ready on port {api.port} (pid {api.pid})")
        run.phase("starting nome serve --role projector --role worker")
        back.start()
        await back.ready("/v1/health")
        run.phase(f"  ready on port {back.port} (pid {back.pid})")
        # 200 only once the bootstrap key has reached the keys read model (the other process).
        await api.ready("/v1/threads?limit=1", headers=auth)

        # Figure 1 --------------------------------------------------------------------
        run.phase(f"figure 1: POST /v1/threads, {a.clients} clients")
        ids: list[str] = []
        creates, last = await create_load(run, api.port, ids)
        if not ids:
            raise RuntimeError(f"no thread was created: statuses {creates.statuses}")
        run.phase(f"  waiting for the threads read model to reach position {last}")
        await wait_position(watch, position_key, last, within=60)

        # Figure 2 --------------------------------------------------------------------
        run.phase(f"figure 2: GET /v1/threads/{{id}} over {len(ids)} threads, {a.clients} clients")
        gets = [loadgen.build("GET", f"/v1/threads/{i}", headers=auth) for i in ids]
        reads = await loadgen.closed_loop(
            HOST,
            api.port,
            lambda i: gets[i % len(gets)],
            clients=a.clients,
            warmup=a.warmup,
            duration=a.seconds,
        )
        run.phase(f"  {reads.rate:,.0f} req/s ({reads.errors} errors)")

        # Figure 3 --------------------------------------------------------------------
        run.phase(f"figure 3: projection lag at a paced {a.lag_rate}/s of POST /v1/threads")
        lag = await projection_lag(run, api.port, create_request(run), watch, position_key)
        run.phase(
            f"  lag p50 {ms(lag['lag_p50'])} ms, p99 {ms(lag['lag_p99'])} ms "
            f"over {lag['samples']} commands ({lag['errors']} errors)"
        )

        live = await streaming.nome_streaming(run, api, watch, others=(back,))
    finally:
        run.phase("stopping nome serve --role api, then --role projector --role worker")
        api.stop()
        back.stop()
        await watch.aclose()
    return {"creates": creates, "reads": reads, "lag": lag, "live": live}


async def wait_position(
    client: redis.asyncio.Redis, key: str, target: int, *, within: float
) -> None:
    deadline = time.monotonic() + within
    while int(await client.get(key) or 0) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{key} did not reach {target} within {within}s")
        await asyncio.sleep(0.01)


async def projection_lag(
    run: Run, port: int, create: bytes, watch: redis.asyncio.Redis, key: str
) -> dict[str, Any]:
    """Paced creations; for each, the time from its response (the append is committed) until
    the threads projection's stored position reaches the response's X-Nome-Position.

    A watcher polls the position every millisecond. A command whose position is already
    visible when its response arrives counts as lag 0.
    """
    a = run.args
    pending: list[tuple[int, float, float]] = []  # (position, due, acknowledged)
    after_ack: list[float] = []
    after_due: list[float] = []
    seen = [0, 0.0]  # highest position observed, and when
    finished = asyncio.Event()

    def acknowledged(response: loadgen.Response, due: float, done: float) -> None:
        raw = response.header(b"x-nome-position")
        if response.status != 201 or raw is None:
            return
        position = int(raw)
        if position <= seen[0]:
            after_ack.append(0.0)
            after_due.append(max(0.0, seen[1] - due))
        else:
            heapq.heappush(pending, (position, due, done))

    async def watcher() -> None:
        perf = time.perf_counter
        grace: float | None = None
        while True:
            value = int(await watch.get(key) or 0)
            now = perf()
            if value > seen[0]:
                seen[0], seen[1] = value, now
                while pending and pending[0][0] <= value:
                    _, due, done = heapq.heappop(pending)
                    after_ack.append(max(0.0, now - done))
                    after_due.append(now - due)
            if finished.is_set():
                grace = grace or now + 5.0
                if not pending or now > grace:
                    return
            await asyncio.sleep(0.001)

    watching = asyncio.create_task(watcher())
    try:
        load = await loadgen.paced(
            HOST,
            port,
            lambda _i: create,
            rate=a.lag_rate,
            duration=a.seconds,
            clients=a.clients,
            on_response=acknowledged,
        )
    finally:
        finished.set()
        await watching
    return {
        "lag_p50": loadgen.percentile(after_ack, 50),
        "lag_p99": loadgen.percentile(after_ack, 99),
        "lag_max": max(after_ack, default=0.0),
        "lag_from_due_p50": loadgen.percentile(after_due, 50),
        "lag_from_due_p99": loadgen.percentile(after_due, 99),
        "post_p50": loadgen.percentile(load.latencies, 50),
        "post_p99": loadgen.percentile(load.latencies, 99),
        "achieved_rate": load.rate,
        "samples": len(after_ack),
        "never_visible": len(pending),
        "errors": load.errors,
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- the run ----------------------------------------------------------------------------


def measure(run: Run) -> None:
    raw, stock = database_baselines(run)

    http: dict[str, Any] = {}

    async def http_phases() -> None:
        http["bare"], http["stock_http"], http["bare_first"] = await bare_route(run)
        http["all_in_one"] = await nome_all_in_one(run)
        http.update(await nome_figures(run))
        http["bare_fanout"] = await bare_fanout(run, http["live"]["fanout"].schedule)
        a = run.args
        run.phase(
            f"diagnostic: in-process create_thread (no HTTP), {a.clients} concurrent commands; "
            f"then top the log up to {a.rebuild_events:,} events for the rebuild"
        )
        http["inprocess"] = inproc = await create_threads(
            PG_URL,
            run.schema,
            clients=a.clients,
            warmup=a.warmup,
            duration=a.seconds,
            at_least=a.rebuild_events,
        )
        run.phase(f"  {inproc.rate:,.0f} creations/s ({inproc.errors} errors)")

    run_async(http_phases)

    run.phase("figure 4: full rebuild of every read model, in-process")
    rebuild = rebuild_all(PG_URL, run.schema, REDIS_URL, run.prefix)
    run.phase(f"  {rebuild.ops:,} events in {rebuild.seconds:.2f} s = {rebuild.rate:,.0f} events/s")
    run.phase("baseline 4: SELECT state FROM nome_events ORDER BY notification_id (best of 3)")
    select = baselines.raw_select(PG_URL, run.schema)
    run.phase(f"  {select.ops:,} rows in {select.seconds:.3f} s = {select.rate:,.0f} rows/s")

    creates, reads, bare, lag = http["creates"], http["reads"], http["bare"], http["lag"]
    inproc, stock_http, all_in_one = http["inprocess"], http["stock_http"], http["all_in_one"]
    run.figures = [
        Figure(
            "1 thread creations/s vs raw INSERT tx/s",
            creates.rate,
            "/s",
            raw.rate,
            "raw INSERT tx/s",
            target=">= 1,500/s",
            met=creates.rate >= 1500,
        ),
        Figure(
            "1 thread creations/s vs stock save()/s",
            creates.rate,
            "/s",
            stock_http.rate,
            "stock save() per request, bare Litestar /s",
            target=">= 3x",
            met=stock_http.rate > 0 and creates.rate / stock_http.rate >= 3,
        ),
        Figure(
            "1 thread creations/s vs stock save(), no HTTP",
            creates.rate,
            "/s",
            stock.rate,
            f"eventsourcing save()/s, {run.args.clients} threads in-process",
            target="",
            met=None,
        ),
        Figure(
            "1 thread creations/s: HTTP vs in-process",
            creates.rate,
            "/s",
            inproc.rate,
            "create_thread()/s, no HTTP",
            target="",
            met=None,
        ),
        Figure(
            "1 thread creations/s: API+projector+worker in one process",
            all_in_one.rate,
            "/s",
            creates.rate,
            "as deployed: API process + projector/worker process /s",
            target="",
            met=None,
        ),
        Figure(
            "2 GET /v1/threads/{id} req/s vs bare route",
            reads.rate,
            "/s",
            bare.rate,
            "bare Litestar req/s",
            target=">= 0.5x",
            met=bare.rate > 0 and reads.rate / bare.rate >= 0.5,
        ),
        Figure(
            "3 projection lag p50 vs POST p50",
            lag["lag_p50"] * 1000,
            "ms",
            lag["post_p50"] * 1000,
            "POST latency p50 ms",
            target="",
            met=None,
        ),
        Figure(
            "3 projection lag p99 vs POST p99",
            lag["lag_p99"] * 1000,
            "ms",
            lag["post_p99"] * 1000,
            "POST latency p99 ms",
            target="< 50 ms",
            met=lag["lag_p99"] * 1000 < 50 and lag["never_visible"] == 0,
        ),
        Figure(
            "4 rebuild events/s vs raw SELECT rows/s",
            rebuild.rate,
            "/s",
            select.rate,
            "raw SELECT rows/s",
            target=">= 20,000/s",
            met=rebuild.rate >= 20_000,
        ),
    ]
    more, live_details = streaming.figures(
        http["live"], http["bare_first"], http["bare_fanout"], creates.rate
    )
    run.figures += more
    run.details.update(live_details)
    run.details.update(
        {
            "raw_insert": raw._asdict(),
            "stock_save": stock._asdict(),
            "stock_save_http": summary(stock_http),
            "bare_route": summary(bare),
            "thread_create": summary(creates),
            "thread_create_all_in_one_process": summary(all_in_one),
            "thread_get": summary(reads),
            "projection_lag": lag,
            "inprocess_create": inproc._asdict(),
            "rebuild": rebuild._asdict(),
            "raw_select": select._asdict(),
        }
    )


def summary(result: loadgen.LoadResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "errors": result.errors,
        "seconds": result.seconds,
        "rate": result.rate,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "latency_p50_ms": loadgen.percentile(result.latencies, 50) * 1000,
        "latency_p99_ms": loadgen.percentile(result.latencies, 99) * 1000,
    }


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """uvloop when it is installed (uvicorn uses it too), so the client stays lean."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per figure")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per figure")
    parser.add_argument("--lag-rate", type=float, default=500.0, help="paced commands/s (500)")
    parser.add_argument(
        "--rebuild-events", type=int, default=30_000, help="log size to rebuild, at least (30000)"
    )
    parser.add_argument(
        "--chats", type=int, default=200, help="sequential chats for figure 5 (200)"
    )
    parser.add_argument(
        "--subscribers", type=int, default=200, help="streams of one run for figure 6 (200)"
    )
    parser.add_argument(
        "--fanout-words", type=int, default=12_000, help="words of figure 6's answer (12000)"
    )
    parser.add_argument(
        "--replay-events", type=int, default=10_000, help="events of figure 7's run (10000)"
    )
    parser.add_argument(
        "--tool-clients", type=int, default=16, help="concurrent chats for figure 8 (16)"
    )
    parser.add_argument(
        "--approvals", type=int, default=50, help="sequential approvals for figure 9 (50)"
    )
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    run = Run(parse(argv))
    # SIGTERM unwinds like Ctrl-C, so the cleanup below still runs.
    signal.signal(signal.SIGTERM, _terminate)
    # The in-process rebuild logs through structlog; only warnings belong in the output.
    configure("console", "warning")
    run.phase(f"bench run {run.tag}: schema {run.schema}, Redis prefix {run.prefix}")
    load = os.getloadavg()[0]
    run.details["load_average_at_start"] = load
    if load > 0.5:
        run.phase(
            f"  note: load average {load:.2f} before starting; other processes share these "
            f"{os.cpu_count()} cores and every figure, baselines included, will be noisy"
        )
    try:
        measure(run)
    finally:
        run.cleanup()
    print()
    print(table(run.figures))
    RESULTS.write_text(
        json.dumps(
            {
                "run": {
                    "tag": run.tag,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "clients": run.args.clients,
                    "seconds": run.args.seconds,
                    "warmup": run.args.warmup,
                    "lag_rate": run.args.lag_rate,
                },
                "figures": [f.as_dict() for f in run.figures],
                "details": run.details,
            },
            indent=2,
        )
        + "\n"
    )
    run.phase(f"wrote {RESULTS}")
    return 0
