"""A pending approval outlives every process and every read model.

One `nome serve` process (all roles) starts a run whose tool call needs approval. The process
is stopped (SIGTERM, then SIGKILL if it lingers) and the Redis keys of its prefix are flushed,
so nothing survives but the Postgres log. A new process rebuilds its read models from the
log; the approval is in the queue again, pending; approving it lets the run complete.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.env import REDIS_URL
from tests.support.processes import Cluster, cluster, eventually, run_events

pytestmark = pytest.mark.slow

INPUT = '/tool math.evaluate {"expression": "6*7"}\nwhat is six times seven'
ANSWER = 'what is six times seven\nmath.evaluate: {"value":42}'


def stop(process: Any) -> None:
    """SIGTERM, and SIGKILL if the process has not gone after a while."""
    process.popen.send_signal(signal.SIGTERM)
    try:
        process.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    assert not process.alive()


def flush(prefix: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        assert list(client.scan_iter(match=prefix + "*", count=1000)) == []
        return len(keys)
    finally:
        client.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def pending_of(http: httpx.Client, run_id: str) -> dict[str, Any] | None:
    response = http.get("/v1/approvals", params={"status": "pending"})
    if response.status_code != 200:
        return None  # the key itself may not be back yet while the read models rebuild
    return next((a for a in response.json()["data"] if a["run_id"] == run_id), None)


def test_a_pending_approval_survives_a_restart_of_every_process_and_an_empty_redis(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        first = nodes.start("first")  # `nome serve`: api, projector and worker
        nodes.wait_for_key(first)
        with httpx.Client(base_url=first.url, headers=nodes.headers(), timeout=10) as http:
            ok(http.put("/v1/tools/policies/math.evaluate", json={"approval": "required"}))
            thread = ok(http.post("/v1/threads", json={"title": "restart"}), 201)
            run = ok(http.post("/v1/runs", json={"thread_id": thread["id"], "input": INPUT}), 201)
            before = eventually(lambda: pending_of(http, run["id"]), what="the approval")
            events_before = run_events(http, first.url, nodes.headers(), run["id"])
        assert [e["type"] for e in events_before][-1] == "approval.requested"

        stop(first)
        assert flush(nodes.prefix) > 0

        second = restart(nodes)
        with httpx.Client(base_url=second.url, headers=nodes.headers(), timeout=10) as http:
            after = eventually(lambda: pending_of(http, run["id"]), what="the approval again")
            assert after == before
            waiting = ok(http.get(f"/v1/runs/{run['id']}"))
            assert waiting["status"] == "active" and waiting["awaiting_approval"] is True
            # Nothing moved while nobody answered: the restart appended nothing to the run.
            assert run_events(http, second.url, nodes.headers(), run["id"]) == events_before

            approved = ok(http.post(f"/v1/approvals/{before['id']}/approve"))
            assert approved["status"] == "approved"

            def completed() -> dict[str, Any] | None:
                current = ok(http.get(f"/v1/runs/{run['id']}"))
                return current if current["status"] == "completed" else None

            done = eventually(completed, what="the run to complete")
            assert done["awaiting_approval"] is False
            events = run_events(http, second.url, nodes.headers(), run["id"])
            assert events[: len(events_before)] == events_before
            assert [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"] == [
                "approved"
            ]
            receipts = [e["data"]["receipt"] for e in events if e["type"] == "tool.completed"]
            assert [(r["status"], r["result"]) for r in receipts] == [("ok", {"value": 42})]
            (finished,) = [e for e in events if e["type"] == "run.completed"]
            assert finished["data"]["output"] == ANSWER
            assert ok(http.get("/v1/approvals", params={"status": "pending"}))["data"] == []


def restart(nodes: Cluster) -> Any:
    """A new process on the same log, answering once its read models are rebuilt."""
    process = nodes.start("second")

    def rebuilt() -> bool:
        health = httpx.get(process.url + "/v1/health", timeout=5)
        return health.status_code == 200 and health.json()["status"] == "ok"

    eventually(rebuilt, what="the read models to be rebuilt")
    nodes.wait_for_key(process)
    return process
