"""`max_concurrent_runs` holds across worker processes (API.md §6): with a limit of 2 and two
`nome serve --role worker` processes driving slow model turns, the runs' intervals in the
log (run.started to their end) never overlap three deep, and runs get their slots in the
order they were created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nome_core.keys import secrets
from nome_core.tenants.state import tenant_id_for
from tests.support.fake_openai import FakeOpenAI, text_reply
from tests.support.processes import cluster, eventually, run_events
from tests.support.runs import TERMINAL

pytestmark = pytest.mark.slow

RUNS = 8
LIMIT = 2


def test_two_workers_never_run_more_of_a_tenants_runs_at_once_than_its_limit(
    tmp_path: Path,
) -> None:
    # Each turn takes about half a second, so the runs would overlap without the limit.
    fake = FakeOpenAI.replying(text_reply(["slow "] * 10 + ["done"], pause=0.05)).start()
    operator = secrets.generate()
    try:
        with (
            cluster(
                tmp_path,
                NOME_OPENAI_BASE_URL=fake.base_url,
                NOME_OPENAI_API_KEY="sk-fake",
                NOME_BOOTSTRAP_PLATFORM_KEY=operator,
            ) as nodes,
            httpx.Client(timeout=30) as client,
        ):
            api = nodes.start("api", "api")
            nodes.start_many(
                ("projector", ("projector",)),
                ("worker-a", ("worker",)),
                ("worker-b", ("worker",)),
            )
            nodes.wait_for_key(api)
            limits = client.put(
                f"{api.url}/v1/platform/tenants/{tenant_id_for('default')}/limits",
                json={"max_concurrent_runs": LIMIT},
                headers={"Authorization": f"Bearer {operator}"},
            )
            assert limits.status_code == 200, limits.text
            agent = client.post(
                api.url + "/v1/agents",
                json={
                    "name": "slow",
                    "instructions": "Be slow.",
                    "provider": "openai",
                    "model": "gpt-fake",
                    "tools": [],
                },
                headers=nodes.headers(),
            )
            assert agent.status_code == 201, agent.text
            run_ids = []
            for n in range(RUNS):
                thread = client.post(api.url + "/v1/threads", json={}, headers=nodes.headers())
                run = client.post(
                    api.url + "/v1/runs",
                    json={
                        "thread_id": thread.json()["id"],
                        "input": f"run {n}",
                        "agent_id": agent.json()["id"],
                    },
                    headers=nodes.headers(),
                )
                assert run.status_code == 201, run.text
                run_ids.append(run.json()["id"])

            def all_ended() -> dict[str, list[dict[str, Any]]] | None:
                logs = {r: run_events(client, api.url, nodes.headers(), r) for r in run_ids}
                done = all(events and events[-1]["type"] in TERMINAL for events in logs.values())
                return logs if done else None

            logs = eventually(all_ended, what="every run to end", limit=120)
            export = client.get(api.url + "/v1/audit/export", headers=nodes.headers())
            assert export.status_code == 200, export.text
            lines = [json.loads(line) for line in export.text.splitlines() if line.strip()]
            slots = [e["data"]["run_id"] for e in lines if e.get("type") == "slots.taken"]
    finally:
        fake.stop()

    assert all(events[-1]["type"] == "run.completed" for events in logs.values())
    # Walk the log: +1 at a run's start, -1 at its end.
    edges = []
    for events in logs.values():
        started = next(e for e in events if e["type"] == "run.started")
        edges += [(started["position"], +1), (events[-1]["position"], -1)]
    active, most = 0, 0
    for _, step in sorted(edges):
        active += step
        most = max(most, active)
    assert most == LIMIT
    # First admitted, first given a slot (the account stream's order; which of the runs
    # holding slots at once a worker starts first is the workers' race, not the queue's).
    assert slots == run_ids
