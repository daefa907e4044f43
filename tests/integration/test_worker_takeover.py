"""A run whose worker dies is taken over by another worker once its lease lapses, never lost
and never run twice (API.md §3), with real `nome serve --role ...` processes.

The main scenario kills worker A with SIGKILL in the middle of an `openai` model turn: the
fake model server streams a few pieces and then holds the turn open, so the kill lands
mid-turn by construction rather than by timing. Worker B then finishes the run. A scripted
variant covers the deterministic provider: the scripted model answers instantly, so its dead
worker is simulated by writing the steps it got to (run.started and a first delta) straight
into the log and leaving its lease behind in Redis.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from nome_core.application import Actor
from nome_core.clock import SystemClock
from nome_core.events import Draft, Meta
from nome_core.runs import decide as runs_decide
from nome_core.runs.events import MessageDelta
from nome_core.runs.handlers import step_of
from nome_core.runs.state import evolve as runs_evolve
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from tests.support.app import make_app
from tests.support.env import PG_URL, REDIS_URL
from tests.support.fake_openai import FakeOpenAI, Request, text_reply, tool_call_reply
from tests.support.processes import Cluster, NomeProcess, cluster, eventually, run_events
from tests.support.runs import TERMINAL, assert_log_invariants, messages_text

pytestmark = pytest.mark.slow

LEASE_S = "1"
# Worker A gets these pieces 100 ms apart, and then the turn is held open until teardown.
INTERRUPTED = ["Let me ", "think ", "about ", "that: ", "Grüße ", "👋 ", "never ", "sent"]
SENT_BEFORE_HOLD = 6
# Worker B's turn: the whole answer.
ANSWER = ["Two ", "plus ", "two ", "is ", "4", "."]


@dataclass
class Takeover:
    nodes: Cluster
    api: NomeProcess
    client: httpx.Client
    run_id: str
    left_by_a: list[dict[str, Any]]  # the log as worker A left it when it was killed
    events: list[dict[str, Any]]  # the whole log once worker B finished
    requests: list[Request]

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.client.get(self.api.url + path, headers=self.nodes.headers(**headers))

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.client.post(self.api.url + path, json=body, headers=self.nodes.headers())


def create_run(nodes: Cluster, client: httpx.Client, api: NomeProcess, **body: Any) -> str:
    thread = client.post(api.url + "/v1/threads", json={"title": "t"}, headers=nodes.headers())
    assert thread.status_code == 201, thread.text
    run = client.post(
        api.url + "/v1/runs",
        json={"thread_id": thread.json()["id"], **body},
        headers=nodes.headers(),
    )
    assert run.status_code == 201, run.text
    return str(run.json()["id"])


def wait_for_end(
    client: httpx.Client, nodes: Cluster, api: NomeProcess, run_id: str
) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        events = run_events(client, api.url, nodes.headers(), run_id)
        return events if events and events[-1]["type"] in TERMINAL else None

    try:
        return eventually(ended, what=f"run {run_id} to end")  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{nodes.logs()}") from None


@pytest.fixture(scope="module")
def takeover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Takeover]:
    """One run, its worker SIGKILLed mid-turn and finished by a second worker."""
    hold = threading.Event()
    fake = FakeOpenAI.replying(
        tool_call_reply("call_1", "math__evaluate", ['{"expres', 'sion": "2', '+2"}']),
        text_reply(INTERRUPTED, pause=0.1, hold=hold, hold_after=SENT_BEFORE_HOLD),
        text_reply(ANSWER, pause=0.01),
    ).start()
    workdir = tmp_path_factory.mktemp("takeover")
    try:
        with (
            cluster(
                workdir,
                NOME_RUN_LEASE_S=LEASE_S,
                NOME_OPENAI_BASE_URL=fake.base_url,
                NOME_OPENAI_API_KEY="sk-fake",
            ) as nodes,
            httpx.Client(timeout=30) as client,
        ):
            api = nodes.start("api", "api")
            _, worker_a = nodes.start_many(("projector", ("projector",)), ("worker-a", ("worker",)))
            nodes.wait_for_key(api)
            agent = client.post(
                api.url + "/v1/agents",
                json={
                    "name": "adder",
                    "instructions": "Add.",
                    "provider": "openai",
                    "model": "gpt-fake",
                    "tools": ["math.evaluate"],
                },
                headers=nodes.headers(),
            )
            assert agent.status_code == 201, agent.text
            run_id = create_run(
                nodes, client, api, input="What is 2+2?", agent_id=agent.json()["id"]
            )

            def mid_turn() -> list[dict[str, Any]] | None:
                events = run_events(client, api.url, nodes.headers(), run_id)
                deltas = [e for e in events if e["type"] == "message.delta"]
                return events if len(deltas) >= 3 else None

            eventually(mid_turn, what="worker A to stream some of its answer")
            worker_a.kill()
            left_by_a = run_events(client, api.url, nodes.headers(), run_id)
            assert left_by_a[-1]["type"] not in TERMINAL, "the run ended before the kill"

            nodes.start("worker-b", "worker")
            events = wait_for_end(client, nodes, api, run_id)
            yield Takeover(nodes, api, client, run_id, left_by_a, events, list(fake.requests))
    finally:
        hold.set()
        fake.stop()


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_a_run_whose_worker_is_killed_mid_turn_is_completed_by_another_worker(
    takeover: Takeover,
) -> None:
    assert takeover.events[-1]["type"] == "run.completed"
    assert takeover.events[-1]["data"]["output"] == "".join(ANSWER)
    # What worker A recorded is kept as it was: the log only grew.
    assert takeover.events[: len(takeover.left_by_a)] == takeover.left_by_a


def test_the_taken_over_log_is_gapless_with_one_start_and_no_step_recorded_twice(
    takeover: Takeover,
) -> None:
    assert_log_invariants(takeover.events, takeover.run_id)
    types = [e["type"] for e in takeover.events]
    assert types.count("run.started") == 1
    assert types.count("tool.called") == 1
    assert types.count("tool.completed") == 1
    assert types.count("run.completed") == 1


def test_the_second_worker_continues_from_the_log_instead_of_repeating_the_tool_turn(
    takeover: Takeover,
) -> None:
    (receipt,) = [e["data"]["receipt"] for e in of_type(takeover.events, "tool.completed")]
    assert receipt["status"] == "ok" and receipt["result"] == {"value": 4}
    # Tool turn and interrupted turn by worker A, then exactly one turn by worker B.
    assert len(takeover.requests) == 3
    resumed = takeover.requests[2].messages
    (tool_message,) = [m for m in resumed if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == receipt["call_id"]
    assert "4" in tool_message["content"]
    assistant = next(m for m in resumed if m["role"] == "assistant")
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"expression": "2+2"}
    ]


def test_the_interrupted_message_is_closed_with_what_was_said_and_the_answer_starts_afresh(
    takeover: Takeover,
) -> None:
    said_by_a = "".join(e["data"]["text"] for e in of_type(takeover.left_by_a, "message.delta"))
    assert said_by_a and "".join(INTERRUPTED[:SENT_BEFORE_HOLD]).startswith(said_by_a)
    assert messages_text(takeover.events) == [said_by_a, "".join(ANSWER)]
    completed = of_type(takeover.events, "message.completed")
    assert completed[0]["data"]["message_id"] != completed[1]["data"]["message_id"]


def test_the_read_model_of_a_taken_over_run_agrees_with_its_log(takeover: Takeover) -> None:
    last = str(takeover.events[-1]["position"])
    live = takeover.get(f"/v1/runs/{takeover.run_id}", **{"X-Nome-Min-Position": last})
    folded = takeover.get(f"/v1/runs/{takeover.run_id}/state")
    assert live.status_code == 200 and folded.status_code == 200, (live.text, folded.text)
    assert live.json() == folded.json()["run"]
    assert live.json()["status"] == "completed"
    assert live.json()["event_count"] == len(takeover.events)


def test_verify_finds_a_run_taken_over_mid_turn_deterministic(takeover: Takeover) -> None:
    verdict = takeover.post(f"/v1/runs/{takeover.run_id}/verify")
    assert verdict.status_code == 200, verdict.text
    assert verdict.json() == {
        "deterministic": True,
        "events_compared": len(takeover.events),
        "divergence": None,
    }, verdict.json()


# -- scripted provider -----------------------------------------------------------------


async def _write_dead_workers_steps(nodes: Cluster, run_id: str, text: str) -> None:
    """What a worker that died mid-turn leaves: run.started and a first delta, and its lease."""
    store = EventStore(PG_URL, schema=nodes.schema, create_table=False)
    writer = GroupCommitWriter(store)
    writer.start()
    try:
        clock = SystemClock()
        app = make_app(store, writer, clock)
        state = await asyncio.to_thread(app.bus.load, run_id, runs_evolve)
        assert state is not None and state.status == "pending"
        actor = Actor(state.tenant_id, Meta(principal="worker-dead"))
        started = await app.runs.record(
            actor, step_of(state, runs_decide.start(state, "scripted-1"))
        )
        assert started.state is not None
        delta = Draft(MessageDelta(message_id=clock.new_id(), text=text), clock.new_id())
        await app.runs.record(actor, step_of(started.state, [delta]))
    finally:
        writer.stop()
        store.close()
    # The key RunWorker.lease_key names; the dead worker's claim lapses after LEASE_S.
    lease = redis.Redis.from_url(REDIS_URL)
    try:
        lease.set(f"{nodes.prefix}lease:run:{run_id}", "worker-dead", px=int(float(LEASE_S) * 1000))
    finally:
        lease.close()


def test_a_scripted_run_left_mid_message_is_resumed_without_repeating_its_text(
    tmp_path: Path,
) -> None:
    words = "alpha beta Grüße 👋 gamma delta"
    with cluster(tmp_path, NOME_RUN_LEASE_S=LEASE_S) as nodes, httpx.Client(timeout=30) as client:
        api = nodes.start("api", "api", "projector")
        nodes.wait_for_key(api)
        # No worker yet: the run stays pending until the "dead" worker's steps are written.
        run_id = create_run(nodes, client, api, input=words)
        # It died in the middle of a word: the resumed turn must cut its chunk there too.
        asyncio.run(_write_dead_workers_steps(nodes, run_id, "alpha be"))
        nodes.start("worker-b", "worker")

        events = wait_for_end(client, nodes, api, run_id)

        assert_log_invariants(events, run_id)
        types = [e["type"] for e in events]
        assert types[-1] == "run.completed"
        assert types.count("run.started") == 1
        deltas = [e["data"]["text"] for e in events if e["type"] == "message.delta"]
        assert deltas[0] == "alpha be"
        # The deterministic turn is regenerated and its recorded prefix skipped, not repeated.
        assert messages_text(events) == [words]
        assert events[-1]["data"]["output"] == words
        verdict = client.post(f"{api.url}/v1/runs/{run_id}/verify", headers=nodes.headers())
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["deterministic"] is True, verdict.json()


def test_the_taken_over_run_is_charged_once_in_the_commit_of_its_end(
    takeover: Takeover,
) -> None:
    end = takeover.events[-1]
    ledger = takeover.get(
        "/v1/account/ledger?limit=200", **{"X-Nome-Min-Position": str(end["position"])}
    ).json()["data"]
    of_run = [e for e in ledger if e["run_id"] == takeover.run_id]
    cost = end["data"]["usage"]["credits"]
    held = {"fast": 10, "standard": 20, "deep": 50}[
        takeover.get(f"/v1/runs/{takeover.run_id}").json()["tier"]
    ]
    expected = {("reserve", held), ("consume", cost)} | (
        {("release", held - cost)} if cost < held else set()
    )
    assert sorted((e["type"], e["amount"]) for e in of_run) == sorted(expected)
