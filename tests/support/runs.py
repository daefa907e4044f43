"""Run helpers shared by the in-process and multi-process tests: reading a run's log through
the HTTP API and the invariants every run's log must keep."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.support.api import Api, auth

TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})
# Safety bound for an in-process run to end; never asserted as a duration.
RUN_LIMIT_S = 20.0


class RunStuck(AssertionError):
    """A run did not get where it had to within the safety bound."""


async def events_of(api: Api, key: str, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run, paging through GET /v1/runs/{id}/events."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        response = await api.client.get(
            f"/v1/runs/{run_id}/events", params=params, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["data"])
        if not page["next_cursor"]:
            assert page["total_count"] == len(events)
            return events
        params["cursor"] = page["next_cursor"]


async def wait_for_end(api: Api, key: str, run_id: str) -> list[dict[str, Any]]:
    """The run's whole log once its last event is terminal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_LIMIT_S
    while True:
        events = await events_of(api, key, run_id)
        if events and events[-1]["type"] in TERMINAL:
            return events
        if loop.time() > deadline:
            raise RunStuck(f"run {run_id} did not end: {[e['type'] for e in events]}")
        await asyncio.sleep(0.02)


async def wait_for_events(api: Api, key: str, run_id: str, count: int) -> list[dict[str, Any]]:
    """The run's log once it has at least `count` events or has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_LIMIT_S
    while True:
        events = await events_of(api, key, run_id)
        if len(events) >= count or (events and events[-1]["type"] in TERMINAL):
            return events
        if loop.time() > deadline:
            raise RunStuck(f"run {run_id} never reached {count} events")
        await asyncio.sleep(0.005)


def assert_log_invariants(events: list[dict[str, Any]], run_id: str) -> None:
    """What every run's log keeps, however it was driven.

    One stream, seq gapless from 1, positions increasing, one run.created first and at most
    one run.started, one terminal event last, no call or message recorded twice, and every
    message's deltas concatenating exactly to its completed content.
    """
    assert events, "a run has at least its run.created event"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {e["stream_id"] for e in events} == {run_id}
    assert {e["run_id"] for e in events} == {run_id}
    types = [e["type"] for e in events]
    assert types[0] == "run.created" and types.count("run.created") == 1
    assert types.count("run.started") <= 1
    terminal = [t for t in types if t in TERMINAL]
    assert len(terminal) <= 1
    if terminal:
        assert types[-1] == terminal[0]
    called = Counter(e["data"]["call_id"] for e in events if e["type"] == "tool.called")
    assert all(n == 1 for n in called.values()), f"a tool call was recorded twice: {called}"
    completed_calls = Counter(e["data"]["call_id"] for e in events if e["type"] == "tool.completed")
    assert all(n == 1 for n in completed_calls.values()), (
        f"a call completed twice: {completed_calls}"
    )
    assert set(completed_calls) <= set(called), "a receipt for a call that was never made"
    for e in events:
        if e["type"] == "tool.completed":
            assert e["data"]["receipt"]["call_id"] == e["data"]["call_id"]
    done = Counter(e["data"]["message_id"] for e in events if e["type"] == "message.completed")
    assert all(n == 1 for n in done.values()), f"a message completed twice: {done}"
    for message_id in done:
        text = "".join(
            e["data"]["text"]
            for e in events
            if e["type"] == "message.delta" and e["data"]["message_id"] == message_id
        )
        content = next(
            e["data"]["content"]
            for e in events
            if e["type"] == "message.completed" and e["data"]["message_id"] == message_id
        )
        assert text == content, f"deltas of {message_id} do not add up to its content"
    # No delta after its message completed.
    closed: set[str] = set()
    for e in events:
        if e["type"] == "message.completed":
            closed.add(e["data"]["message_id"])
        elif e["type"] == "message.delta":
            assert e["data"]["message_id"] not in closed, "a delta after message.completed"


def messages_text(events: list[dict[str, Any]]) -> list[str]:
    """The completed messages' contents, in order."""
    return [e["data"]["content"] for e in events if e["type"] == "message.completed"]
