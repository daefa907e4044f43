"""POST /v1/runs from 32 clients all on ONE tenant, read against the same load spread over 32
tenants (each client its own), on the same servers in the same run: what a busy tenant pays
for its one account stream, to which every run's reservation and run slot are appended in the
commit that creates the run (nome_core/accounts, RunHandlers.create). The bus lets such
commands decide on the stream's pending tip and share a group commit instead of conflicting;
the figure says whether that holds the rate (the issue: >= 0.8x the spread-out load).

Every request starts a run on a thread of its own, made beforehand, so no thread's one active
run refuses it. The tenants are on the enterprise plan: a million credits (no run is refused
for credits) and 256 run slots (the one tenant's later runs wait for a slot, as a busy
tenant's do; spread out, none waits).

NOME serves the `api` and `projector` roles only, each in a process of its own as compose.yaml
splits them, and no worker: accepted runs just wait. A worker would run them on this machine's
two cores and settle each on the same account stream from another process, mixing the scripted
model's work and cross-process conflicts into a figure about accepting runs; figure 8 (chat
runs end to end) covers those.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import msgspec

from bench import internals
from bench.client import Connection, Response, post_json
from bench.context import Bench, Figure, latencies
from bench.load import Window, concurrently
from bench.servers import NOME, Server, free_port

# Every run takes a thread of its own, made beforehand. The baseline's clients get threads for
# this many runs/s over a window (warm-up included); the one tenant's, half as many again as
# the baseline's busiest client used: every thread of one tenant counts on its one quota
# stream, the same kind of hot spot, so spare ones cost seconds. One that runs out says so.
MOST_RUNS_PER_S = 800
RUN = {"input": "bench: a run that waits for a worker", "tier": "standard"}


@contextlib.contextmanager
def without_worker(bench: Bench) -> Iterator[Server]:
    """NOME's API and its projector in two processes, no worker: the API's server. The
    shared NOME is stopped first: two NOMEs on one schema would share the projections'
    leases (bench/servers.py)."""
    bench.servers.stop_nome()
    started: list[Server] = []
    try:
        for role in ("api", "projector"):
            port = free_port()
            env = {**bench.nome_env, "NOME_PORT": str(port)}
            started.append(Server(role, [NOME, "serve", "--role", role], env, port))
            # One after the other, as bench/servers.py starts them.
            started[-1].ready("/v1/health")
        started[0].ready("/v1/threads?limit=1", bench.admin)
        yield started[0]
    finally:
        for server in started:
            server.stop()


async def enterprise_tenants(bench: Bench, api: Server, names: list[str]) -> list[dict[str, str]]:
    """The auth header of an admin key of each new enterprise-plan tenant, once the API
    accepts it. Made in-process as `nome keys create` makes them (a CLI start per tenant takes
    seconds on a busy machine): NOME's internals, as bench/internals.py reaches them."""
    from nome_core.bus import Actor
    from nome_core.tenants.state import tenant_id_for

    nome = internals.runtime(bench.nome_env)
    nome.writer.start()
    keys = []
    try:
        for name in names:
            await nome.app.tenants.create(name, plan="enterprise")
            _, key = await nome.app.keys.create(Actor(tenant_id_for(name)), "bench", ["admin"])
            keys.append(key)
    finally:
        nome.writer.stop()
        nome.store.close()
        nome.redis_sync.close()
        await nome.redis.aclose()
    auths = [{"Authorization": f"Bearer {key}"} for key in keys]
    for auth in auths:  # accepted once the projector has put the key in its read model
        await asyncio.to_thread(api.ready, "/v1/bootstrap", auth, 30)
    return auths


async def threads_of(port: int, auths: list[dict[str, str]], count: int) -> list[list[str]]:
    """`count` new threads for each client, made with its tenant's key; a connection each."""
    conns = await asyncio.gather(*(Connection.open(port) for _ in auths))

    async def make(conn: Connection, auth: dict[str, str]) -> list[str]:
        request = post_json("/v1/threads", {"title": "bench run thread"}, auth)
        ids = []
        for _ in range(count):
            response = await conn.roundtrip(request)
            if response.status != 201:
                raise RuntimeError(f"POST /v1/threads: {response.status} {response.body[:200]!r}")
            ids.append(msgspec.json.decode(response.body)["id"])
        return ids

    try:
        return await asyncio.gather(*(make(c, a) for c, a in zip(conns, auths, strict=True)))
    finally:
        for conn in conns:
            conn.close()


class Runs:
    """Each client's POST /v1/runs, one per thread of its own, and how many it has sent."""

    def __init__(self, auths: list[dict[str, str]], threads: list[list[str]]) -> None:
        self.auths = auths
        self.requests = [
            [post_json("/v1/runs", {**RUN, "thread_id": t}, auth) for t in mine]
            for auth, mine in zip(auths, threads, strict=True)
        ]
        self.sent = [0] * len(auths)

    def next(self, client: int) -> bytes:
        if self.sent[client] == len(self.requests[client]):
            raise RuntimeError(f"a client used its {self.sent[client]} threads: make more")
        self.sent[client] += 1
        return self.requests[client][self.sent[client] - 1]


def position(response: Response) -> int:
    return int(response.header(b"x-nome-position") or 0)


async def prime(port: int, runs: Runs) -> int:
    """One run per tenant, unmeasured (a tenant's first run also makes its default agent):
    the highest position answered."""
    first = {auth["Authorization"]: i for i, auth in enumerate(runs.auths)}
    conn = await Connection.open(port)
    try:
        answers = [await conn.roundtrip(runs.next(client)) for client in first.values()]
    finally:
        conn.close()
    if bad := [a for a in answers if a.status != 201]:
        raise RuntimeError(f"POST /v1/runs: {bad[0].status} {bad[0].body[:300]!r}")
    return max(map(position, answers))


async def starts(bench: Bench, port: int, runs: Runs) -> tuple[Window, int]:
    """Each client POSTs its runs on a connection of its own for one window: the window
    and the highest position answered."""
    conns = await asyncio.gather(*(Connection.open(port) for _ in runs.auths))
    last = [0]

    async def op(client: int) -> int:
        response = await conns[client].roundtrip(runs.next(client))
        if response.status == 201:
            last[0] = max(last[0], position(response))
        return response.status

    try:
        window = await concurrently(len(conns), bench.window(), op)
    finally:
        for conn in conns:
            conn.close()
    return window, last[0]


async def load(
    bench: Bench, api: Server, auths: list[dict[str, str]], threads: int
) -> tuple[Window, int]:
    """One side: `threads` threads per client made and each tenant primed, then the window:
    it, and the most runs a client sent. It returns once the read models have caught up, so
    the other side starts on a quiet NOME."""
    runs = Runs(auths, await threads_of(api.port, auths, threads))
    await asyncio.to_thread(bench.wait_projections, await prime(api.port, runs))
    window, last = await starts(bench, api.port, runs)
    bench.phase("  " + window.summary("runs/s"))
    waited = await asyncio.to_thread(bench.wait_projections, last, 120)
    bench.phase(f"  read models caught up {waited:.2f} s after the load")
    return window, max(runs.sent)


async def measure(bench: Bench) -> list[Figure]:
    clients = bench.args.clients
    bench.phase("runs on one tenant: NOME's api and projector, no worker; making tenants")
    with without_worker(bench) as api:
        names = [f"runs-spread-{i}" for i in range(clients)]
        *spread, one = await enterprise_tenants(bench, api, [*names, "runs-one"])
        bench.phase(f"baseline: POST /v1/runs, {clients} clients on {clients} tenants")
        window = bench.args.warmup + bench.args.seconds
        threads = math.ceil(MOST_RUNS_PER_S * window / clients)
        many, most = await load(bench, api, spread, threads)
        bench.phase(f"figure: POST /v1/runs, {clients} clients on one tenant")
        single, _ = await load(bench, api, [one] * clients, math.ceil(most * 1.5))
    problem = single.problem or many.problem
    return [
        Figure(
            f"runs/s, {clients} clients on one tenant vs on {clients}",
            single.rate,
            "/s",
            f"{clients} clients on {clients} tenants /s",
            many.rate,
            ">= 0.8x",
            problem,
        ),
        *latencies(
            "runs on one tenant: POST /v1/runs {q}",
            single.latencies,
            f"on {clients} tenants {{q}} ms",
            many.latencies,
            problem=problem,
        ),
    ]
