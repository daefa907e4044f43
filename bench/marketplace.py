"""The marketplace (API.md §6a), two figures on one NOME as deployed (the API; the projector and
the worker), with file:// imports and tool servers on 127.0.0.1 allowed:

- A package tool call through NOME (`POST /v1/tools/call` of `weather-demo.forecast`) read
  against the same signed POST sent straight to the same tool server: the latency NOME's
  executor adds to a call (the receipt's `duration_ms`, what a run's call waits on, minus the
  direct call), p50 (the issue: < 5 ms) and p99; and, as a diagnostic, the whole request's.
  The package is the example one (examples/packages/weather),
  imported from a git repository made here, installed, and served by its example server in
  this process with the install's signing secret. The two calls alternate from one client, one
  request at a time, so a load spike from elsewhere hits both alike. A direct call through NOME
  is also recorded: its `tool.called` and `tool.completed` are appended in one commit before
  the answer, so the added latency includes that commit, besides the policy decision, the
  install read from the log and the signing. Each side opens a connection to the tool server
  per call (NOME's executor does, and the example server closes it after each answer).
- Catalog search, `GET /v1/marketplace/packages?q=`, with 10,000 public packages published:
  p99 over a few queries (a word, a prefix, two words, and no `q`: the first page by name)
  alternated with GET /v1/bootstrap of the same tenant (the issue: p99 < 20 ms). Each package's
  description is eight words of a list of 32, so a one-word query matches about a quarter of
  the catalog: search counts every match (`total_count`), so it is the heavy case.

The 10,000 packages' `package.version_published` are sealed straight into the log, as
bench/usage.py seeds its runs (with the tenant made in-process, the uses here of NOME's
internals): an import through git takes about half a second, 10,000 over an hour. They are
what a platform import publishes, on the public package streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from bench import internals
from bench.client import JSON, Connection, build, call, post_json
from bench.context import Bench, Figure, latencies
from bench.load import Window, no_gc_pauses, percentile
from bench.runs_one_tenant import enterprise_tenants
from bench.servers import NOME, ROOT, Server, free_port
from bench.usage import alternated, caught_up

EXAMPLE = ROOT / "examples" / "packages" / "weather"
PACKAGE, TOOL = "weather-demo", "forecast"
ARGUMENTS = {"city": "Lyon"}
# What the import and the package calls need of the deployment (API.md §6a).
SETTINGS = {"NOME_IMPORT_FILE_URLS": "1", "NOME_FETCH_ALLOW_HOSTS": "127.0.0.1"}

PACKAGES = 10_000
BATCH = 1000  # events per insert
# Words of the packages' names and descriptions.
# fmt: off
WORDS = (
    "weather", "forecast", "calendar", "calculator", "slack", "github", "notes", "search", "email",
    "invoice", "translate", "summary", "database", "metrics", "alerts", "files", "images", "maps",
    "tickets", "chat", "payments", "reports", "sheets", "docs", "crm", "backup", "deploy",
    "security", "audio", "video", "news", "stocks",
)
# fmt: on
SEARCHES = ["q=weather", "q=cal", "q=slack%20notes", ""]  # "": the first page, by name


# -- the package tool call -------------------------------------------------------------------


def example_server() -> ModuleType:
    """examples/packages/weather/server.py, loaded as a module: a script to copy, not part of
    an installed package."""
    name = "bench_example_weather_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "server.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        # Its access log, a line on stderr per call, would bury the progress lines.
        module.Handler.log_message = lambda *_: None
    return sys.modules[name]


@contextlib.contextmanager
def importing_nome(bench: Bench) -> Iterator[Server]:
    """NOME as deployed (the API; the projector and the worker, which performs imports), with
    SETTINGS: the API's server. The shared NOME is stopped first (bench/servers.py)."""
    bench.servers.stop_nome()
    started: list[Server] = []
    try:
        for roles in (["api"], ["projector", "worker"]):
            port = free_port()
            argv = [NOME, "serve", *(a for role in roles for a in ("--role", role))]
            env = {**bench.nome_env, **SETTINGS, "NOME_PORT": str(port)}
            started.append(Server("+".join(roles), argv, env, port))
            started[-1].ready("/v1/health")  # one after the other, as bench/servers.py does
        started[0].ready("/v1/threads?limit=1", bench.admin)
        yield started[0]
    finally:
        for server in started:
            server.stop()


def package_repo(where: Path, tool_port: int) -> Path:
    """A git repository holding the example manifest, its endpoints on `tool_port`."""
    manifest = json.loads((EXAMPLE / "nome-package.json").read_text())
    endpoint = {"type": "http", "url": f"http://127.0.0.1:{tool_port}/tools"}
    manifest["tools"] = [{**tool, "endpoint": endpoint} for tool in manifest["tools"]]
    repo = where / "weather-demo"
    repo.mkdir()
    (repo / "nome-package.json").write_text(json.dumps(manifest, indent=2))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


async def until(
    what: str, get: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], within: float
) -> Any:
    """`await get()` again every 50 ms until `done` says yes of its answer: that answer."""
    deadline = time.monotonic() + within
    while not done(answer := await get()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not after {within:g} s: {str(answer)[:300]}")
        await asyncio.sleep(0.05)
    return answer


async def installed(bench: Bench, api: Server, auth: dict[str, str], tool_port: int) -> str:
    """The example package imported from a repository made here, installed, and its tools
    in the tenant's registry: the install's signing secret."""
    port = api.port
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        body = {"repo": package_repo(Path(tmp), tool_port).as_uri()}
        made = await call(
            port, "POST", "/v1/marketplace/imports", body=body, headers=auth, status=202
        )
        done = await until(
            "the import ended",
            lambda: call(port, "GET", f"/v1/marketplace/imports/{made['id']}", headers=auth),
            lambda got: got["state"] in ("published", "failed"),
            60,
        )
    if done["state"] != "published":
        raise RuntimeError(f"the import failed: {done['failure']}")
    bench.phase(f"  imported {done['package']} {done['version']} at {done['commit'][:12]}")
    body = {"package": PACKAGE}
    install = await call(
        port, "POST", "/v1/marketplace/installs", body=body, headers=auth, status=201
    )
    if install["state"] != "installed":
        raise RuntimeError(f"the install failed: {install['failure']}")
    await until(
        f"{PACKAGE}.{TOOL} in GET /v1/tools",
        lambda: call(port, "GET", "/v1/tools", headers=auth),
        lambda tools: any(t["name"] == f"{PACKAGE}.{TOOL}" for t in tools),
        30,
    )
    return str(install["signing_secret"])


def signed(secret: str, tenant_id: str) -> Callable[[], bytes]:
    """A new direct call each time: NOME's body and headers (nome_api/executors/http.py), a
    fresh call id, signed now with the install's secret."""
    from standardwebhooks import Webhook

    webhook, encode = Webhook(secret), msgspec.json.Encoder().encode

    def request() -> bytes:
        call_id = str(uuid.uuid4())
        body = encode(
            {
                "tool": TOOL,
                "arguments": ARGUMENTS,
                "call_id": call_id,
                "run_id": None,
                "tenant_id": tenant_id,
            }
        )
        now = datetime.now(UTC)
        headers = {
            **JSON,
            "Idempotency-Key": call_id,
            "webhook-id": call_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": webhook.sign(call_id, now, body.decode()),
        }
        return build("POST", "/tools", body=body, headers=headers)

    return request


async def calls(
    bench: Bench, api_port: int, tool_port: int, auth: dict[str, str], direct: Callable[[], bytes]
) -> tuple[Window, Window, list[float], str]:
    """The call through NOME and the direct one, alternated from one client: a window each,
    as long as both of theirs one after the other would be; each receipt's `duration_ms` (the
    call as NOME's executor made it); and the first answer through NOME that was not an `ok`
    receipt, if any."""
    seconds = bench.args.seconds * 2
    through, straight = Window(bench.args.warmup, seconds), Window(bench.args.warmup, seconds)
    body = {"tool": f"{PACKAGE}.{TOOL}", "arguments": ARGUMENTS}
    request = post_json("/v1/tools/call", body, auth)
    conn = await Connection.open(api_port)
    perf, bad, durations = time.perf_counter, "", []
    try:
        through.start()
        straight.start()
        with no_gc_pauses():
            while True:
                sent = perf()
                answer = await conn.roundtrip(request)
                ok = answer.status == 200 and b'"status":"ok"' in answer.body
                if not through.record(sent, answer.status if ok else 502):
                    break
                if ok:
                    durations.append(msgspec.json.decode(answer.body)["duration_ms"] / 1000)
                if not ok and not bad:
                    bad = f"{answer.status} {answer.body[:300]!r}"
                sent = perf()
                tool = await Connection.open(tool_port)  # it closes after each answer
                try:
                    status = (await tool.roundtrip(direct())).status
                finally:
                    tool.close()
                if not straight.record(sent, status):
                    break
    finally:
        conn.close()
    for name, window in (("through NOME", through), ("direct", straight)):
        bench.phase(f"  {name}: {len(window.latencies):,} calls, {window.summary('calls/s')}")
    # Those of the measured window only (the window drops its warm-up's).
    return through, straight, durations[-len(through.latencies) :], bad


async def tool_call(
    bench: Bench, api: Server, auth: dict[str, str], tenant_id: str
) -> list[Figure]:
    bench.phase("marketplace: importing and installing the example package")
    tool_port = free_port()  # the manifest names it before the server can start
    secret = await installed(bench, api, auth, tool_port)
    server, _ = example_server().serve(tool_port, secret)
    try:
        bench.phase("marketplace: weather-demo.forecast through NOME and direct, alternated")
        through, straight, durations, bad = await calls(
            bench, api.port, tool_port, auth, signed(secret, tenant_id)
        )
    finally:
        server.shutdown()
        server.server_close()
    if bad:
        bench.phase(f"  a call through NOME without an ok receipt: {bad}")
    problem = through.problem or straight.problem
    direct = straight.latencies
    executor = [
        Figure(
            f"package tool call p{q}: added by the executor (receipt duration - direct)",
            (percentile(durations, q) - percentile(direct, q)) * 1000,
            "ms",
            f"direct signed POST p{q} ms",
            percentile(direct, q) * 1000,
            "< 5 ms" if q == 50 else "",
            problem,
        )
        for q in (50, 99)
    ]
    # The whole request: the policy decision and the commit of the call's events as well.
    request = [
        Figure(
            f"package tool call p{q}: POST /v1/tools/call - direct",
            (percentile(through.latencies, q) - percentile(direct, q)) * 1000,
            "ms",
            f"direct signed POST p{q} ms",
            percentile(direct, q) * 1000,
            "",
            problem,
        )
        for q in (50, 99)
    ]
    return executor + request


# -- catalog search --------------------------------------------------------------------------


def seed(env: dict[str, str], count: int, progress: Callable[[int], None]) -> int:
    """`count` public packages, each one version published as a platform import publishes
    it, with names and descriptions made of WORDS; inserted BATCH at a time, `progress(done)`
    after each. The position of the last event."""
    from nome_core.events import Head, Meta, seal
    from nome_core.marketplace.events import VersionPublished
    from nome_core.marketplace.manifest import (
        Endpoint,
        Manifest,
        ToolSpec,
        manifest_hash,
        tool_hash,
    )
    from nome_core.marketplace.state import PUBLIC, package_stream_id
    from nome_core.values import PLATFORM_TENANT_ID

    nome = internals.runtime(env)
    store, clock, meta = nome.store, nome.clock, Meta(principal="bench")
    rng = random.Random(7)
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "What to work on."}},
        "required": ["text"],
    }

    def published(i: int) -> list[Any]:
        picked = rng.sample(WORDS, 8)
        name = f"{picked[0]}-{picked[1]}-{i}"
        tool = ToolSpec(
            name="run",
            description=f"Runs {name} on a text.",
            input_schema=schema,
            dangerous=False,
            endpoint=Endpoint(type="http", url=f"https://{name}.example.com/tools"),
        )
        manifest = Manifest(
            name=name,
            version="1.0.0",
            description=f"{' '.join(picked[:4]).capitalize()} for {' and '.join(picked[4:])}.",
            publisher="bench",
            tools=(tool,),
        )
        event = VersionPublished(
            name=name,
            version=manifest.version,
            visibility="public",
            manifest=manifest,
            manifest_hash=manifest_hash(manifest),
            tool_hashes={tool.name: tool_hash(tool)},
            repo=f"https://github.com/bench/{name}.git",
            commit=f"{i:040x}",
            import_id=clock.new_id(),
        )
        return seal(
            [event],
            stream_id=package_stream_id(PUBLIC, name),
            head=Head(),
            tenant_id=PLATFORM_TENANT_ID,
            thread_id=None,
            run_id=None,
            meta=meta,
            clock=clock,
        )

    try:
        return internals.insert_seeded(store, count, BATCH, published, progress)
    finally:
        store.close()


async def catalog_search(bench: Bench, api: Server, auth: dict[str, str]) -> list[Figure]:
    bench.phase(f"marketplace: sealing {PACKAGES:,} published public packages into the log")
    started = time.perf_counter()

    def progress(done: int) -> None:
        if done % (PACKAGES // 2) < BATCH or done == PACKAGES:
            bench.phase(f"  {done:,} packages ({time.perf_counter() - started:.1f} s)")

    last = await asyncio.to_thread(seed, bench.nome_env, PACKAGES, progress)
    waited = await asyncio.to_thread(caught_up, bench, last)
    bench.phase(f"  read models caught up {waited:.1f} s after the last insert")
    listed = await call(api.port, "GET", "/v1/marketplace/packages?limit=1", headers=auth)
    seen = PACKAGES + 1  # and the tenant's own weather-demo
    problem = "" if listed["total_count"] == seen else f"{listed['total_count']:,} of {seen:,}"
    for query in SEARCHES:
        found = await call(api.port, "GET", f"/v1/marketplace/packages?{query}", headers=auth)
        bench.phase(f"  ?{query}: {found['total_count']:,} packages, {len(found['data'])} shown")
    bench.phase("marketplace: catalog searches and GET /v1/bootstrap, alternated")
    paths = [f"/v1/marketplace/packages?{query}".rstrip("?") for query in SEARCHES]
    *searches, boot = await alternated(bench, api.port, [*paths, "/v1/bootstrap"], auth)
    every = [latency for window in searches for latency in window.latencies]
    problem = problem or next((w.problem for w in [*searches, boot] if w.problem), "")
    slowest, path = max(
        (percentile(w.latencies, 99), p) for w, p in zip(searches, paths, strict=True)
    )
    return [
        *latencies(
            f"catalog search {{q}}, {PACKAGES:,} packages, {len(searches)} queries",
            every,
            "GET /v1/bootstrap {q} ms",
            boot.latencies,
            "< 20 ms",
            problem,
        ),
        Figure(
            f"catalog search p99, its slowest query ({path.partition('?')[2] or 'no q'})",
            slowest * 1000,
            "ms",
            "GET /v1/bootstrap p99 ms",
            percentile(boot.latencies, 99) * 1000,
            "< 20 ms",
            problem,
        ),
    ]


async def measure(bench: Bench) -> list[Figure]:
    bench.phase("marketplace: NOME as deployed, file:// imports on; making the tenant")
    with importing_nome(bench) as api:
        (auth,) = await enterprise_tenants(bench, api, ["marketplace"])
        tenant_id = (await call(api.port, "GET", "/v1/bootstrap", headers=auth))["tenant"]["id"]
        return [
            *await tool_call(bench, api, auth, tenant_id),
            *await catalog_search(bench, api, auth),
        ]
