"""Streams across processes: two API processes (A and B), one projector and one worker, each
a real `nome serve --role ...` child sharing one Postgres and one Redis.

A client streaming from A must see, live, what is done through B. "Live" is made certain
rather than timed: the fake model server holds the run's model turn open until the test has
seen the run's first frames on A, so those frames cannot have been read after the run ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI, text_reply
from tests.support.processes import EVENTUAL_LIMIT_S, Cluster, NomeProcess, cluster, run_events
from tests.support.runs import TERMINAL, assert_log_invariants
from tests.support.sse import Frame, events_only, frames

pytestmark = pytest.mark.slow

PIECES = ["Streams ", "cross ", "process ", "boundaries", " — ", "schön", "."]


@dataclass
class Nodes:
    cluster: Cluster
    a: NomeProcess
    b: NomeProcess
    fake: FakeOpenAI
    client: httpx.Client
    agent_id: str

    def headers(self, **extra: str) -> dict[str, str]:
        return self.cluster.headers(**extra)

    def new_thread(self, through: NomeProcess) -> tuple[str, int]:
        response = self.client.post(
            through.url + "/v1/threads", json={"title": "live"}, headers=self.headers()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"]), int(response.headers["x-nome-position"])

    def new_run(self, through: NomeProcess, thread_id: str) -> str:
        response = self.client.post(
            through.url + "/v1/runs",
            json={"thread_id": thread_id, "input": "stream this", "agent_id": self.agent_id},
            headers=self.headers(),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def log(self, through: NomeProcess, run_id: str) -> list[dict[str, Any]]:
        return run_events(self.client, through.url, self.headers(), run_id)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    fake = FakeOpenAI.replying(text_reply(PIECES)).start()
    try:
        with (
            cluster(
                tmp_path_factory.mktemp("streaming"),
                NOME_OPENAI_BASE_URL=fake.base_url,
                NOME_OPENAI_API_KEY="sk-fake",
            ) as processes,
            httpx.Client(timeout=30) as client,
        ):
            # A alone first: it creates the bootstrap tenant; the others then find it.
            a = processes.start("api-a", "api")
            b, _, _ = processes.start_many(
                ("api-b", ("api",)), ("projector", ("projector",)), ("worker", ("worker",))
            )
            processes.wait_for_key(a)
            processes.wait_for_key(b)
            agent = client.post(
                b.url + "/v1/agents",
                json={"name": "streamer", "instructions": "Talk.", "provider": "openai"},
                headers=processes.headers(),
            )
            assert agent.status_code == 201, agent.text
            yield Nodes(processes, a, b, fake, client, str(agent.json()["id"]))
    finally:
        fake.stop()


def read_until(
    stream: Iterator[Frame], done: Any, on_frame: Any = None
) -> tuple[list[Frame], bool]:
    """Frames (keepalives left out) until `done(frame)`; False if the stream ended first.

    Keepalives arrive every second (NOME_SSE_HEARTBEAT_S=1), so the safety bound is checked
    even while the stream is quiet.
    """
    deadline = time.monotonic() + EVENTUAL_LIMIT_S
    seen: list[Frame] = []
    for frame in stream:
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {[f.event for f in seen]}")
        if frame.is_comment:
            continue
        seen.append(frame)
        if on_frame is not None:
            on_frame(frame)
        if done(frame):
            return seen, True
    return seen, False


def test_a_client_streaming_from_process_a_sees_live_a_run_created_through_process_b(
    nodes: Nodes,
) -> None:
    hold = threading.Event()
    nodes.fake.answer_with(text_reply(PIECES, hold=hold, hold_after=2))
    thread_id, thread_position = nodes.new_thread(nodes.b)
    run_id: str | None = None
    log_when_first_seen: list[dict[str, Any]] = []

    def release_on_first_delta(frame: Frame) -> None:
        assert frame.data is not None
        if (
            frame.data["stream_id"] == run_id
            and frame.event == "message.delta"
            and not hold.is_set()
        ):
            # The turn is held open, so the run cannot have ended yet: A is streaming it live.
            log_when_first_seen.extend(nodes.log(nodes.b, run_id))
            hold.set()

    try:
        with nodes.client.stream(
            "GET",
            nodes.a.url + "/v1/events",
            headers=nodes.headers(**{"Last-Event-ID": str(thread_position)}),
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            run_id = nodes.new_run(nodes.b, thread_id)
            seen, completed = read_until(
                frames(response.iter_bytes()),
                lambda f: (
                    f.data is not None and f.data["stream_id"] == run_id and f.event in TERMINAL
                ),
                release_on_first_delta,
            )
    finally:
        hold.set()

    assert completed, "A's workspace stream ended before the run did"
    assert log_when_first_seen and log_when_first_seen[-1]["type"] not in TERMINAL
    # Only what happened after the resume point, each frame's id its global position.
    for frame in seen:
        assert frame.data is not None
        assert frame.id == str(frame.data["position"])
        assert frame.event == frame.data["type"]
        assert frame.data["position"] > thread_position
    positions = [f.data["position"] for f in seen if f.data is not None]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    of_run = [f.data for f in seen if f.data is not None and f.data["stream_id"] == run_id]
    assert of_run[0]["type"] == "run.created" and of_run[-1]["type"] == "run.completed"
    assert of_run[-1]["data"]["output"] == "".join(PIECES)
    # Nothing of the run missing, repeated or changed on its way through A.
    assert of_run == nodes.log(nodes.b, run_id)
    assert_log_invariants(of_run, run_id)


def test_a_run_created_through_b_streams_from_a_live_to_its_completion(nodes: Nodes) -> None:
    hold = threading.Event()
    nodes.fake.answer_with(text_reply(PIECES, hold=hold, hold_after=3))
    thread_id, _ = nodes.new_thread(nodes.b)
    run_id = nodes.new_run(nodes.b, thread_id)
    log_when_first_seen: list[dict[str, Any]] = []

    def release_on_first_delta(frame: Frame) -> None:
        if frame.event == "message.delta" and not hold.is_set():
            log_when_first_seen.extend(nodes.log(nodes.b, run_id))
            hold.set()

    try:
        with nodes.client.stream(
            "GET", f"{nodes.a.url}/v1/runs/{run_id}/stream", headers=nodes.headers()
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = frames(response.iter_bytes())
            seen, ended_on_terminal = read_until(
                stream, lambda f: f.event in TERMINAL, release_on_first_delta
            )
            # After the terminal event the server closes the stream: nothing else comes.
            after_end = [f for f in stream if not f.is_comment]
    finally:
        hold.set()

    assert ended_on_terminal, [f.event for f in seen]
    assert after_end == []
    assert log_when_first_seen and log_when_first_seen[-1]["type"] not in TERMINAL
    assert seen[0].event == "run.created" and seen[-1].event == "run.completed"
    assert [f.id for f in seen] == [str(n) for n in range(1, len(seen) + 1)]
    log = nodes.log(nodes.b, run_id)
    assert [f.data for f in seen] == log
    assert_log_invariants(log, run_id)

    # The live bytes from A equal the recorded replay from B, keepalives aside.
    replay = nodes.client.get(f"{nodes.b.url}/v1/runs/{run_id}/replay", headers=nodes.headers())
    assert replay.status_code == 200
    assert b"".join(f.raw for f in seen) == b"".join(f.raw for f in events_only(replay.content))

    # Resuming from A after seq 3 sends the rest of the finished run and closes.
    resumed = nodes.client.get(
        f"{nodes.a.url}/v1/runs/{run_id}/stream", headers=nodes.headers(**{"Last-Event-ID": "3"})
    )
    assert resumed.status_code == 200
    assert [f.raw for f in events_only(resumed.content)] == [f.raw for f in seen[3:]]

    # Both API processes answer the run the same, once their read model has the last event.
    at = {"X-Nome-Min-Position": str(log[-1]["position"])}
    from_a = nodes.client.get(f"{nodes.a.url}/v1/runs/{run_id}", headers=nodes.headers(**at))
    from_b = nodes.client.get(f"{nodes.b.url}/v1/runs/{run_id}", headers=nodes.headers(**at))
    assert from_a.status_code == from_b.status_code == 200
    assert from_a.json() == from_b.json()
    assert from_a.json()["status"] == "completed"
    assert from_a.json()["event_count"] == len(log)
