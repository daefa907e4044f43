"""Runs, property-based, on the in-process app (real Postgres and Redis): for any scripted
input and any point of cancellation, the state folded from the log equals the live run the
API reports, the log keeps its invariants, and verify finds the run deterministic."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Api, auth
from tests.support.runs import (
    TERMINAL,
    RunStuck,
    assert_log_invariants,
    messages_text,
    wait_for_end,
    wait_for_events,
)

pytestmark = pytest.mark.slow

# -- inputs ------------------------------------------------------------------------------

# Words never start a directive and never contain whitespace or line breaks of any kind
# (str.split and str.splitlines decide where words and directive lines end).
word = st.one_of(
    st.sampled_from(["Grüße", "👋", "naïve", "日本語", "x", "42", "ŝ"]),
    st.text(
        alphabet=st.characters(
            exclude_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp"), exclude_characters="/"
        ),
        min_size=1,
        max_size=8,
    ),
)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv}


@dataclass(frozen=True)
class Directive:
    line: str
    tool: str
    # What the receipt must hold: ("ok", result) / ("error", None) / ("denied", None).
    status: str
    result: Any = None


@st.composite
def maths(draw: st.DrawFn) -> Directive:
    left, right = draw(st.integers(-50, 50)), draw(st.integers(-50, 50))
    op = draw(st.sampled_from(sorted(OPS)))
    expression = f"{left} {op} {right}"
    line = "/tool math.evaluate " + json.dumps({"expression": expression})
    if op == "//" and right == 0:
        return Directive(line, "math.evaluate", "error")
    return Directive(line, "math.evaluate", "ok", {"value": OPS[op](left, right)})


@st.composite
def notes(draw: st.DrawFn) -> Directive:
    text = " ".join(draw(st.lists(word, min_size=1, max_size=3)))
    line = "/tool thread.note " + json.dumps({"text": text}, ensure_ascii=False)
    return Directive(line, "thread.note", "ok")


directive = st.one_of(
    maths(),
    notes(),
    st.just(Directive("/tool clock.now {}", "clock.now", "ok")),
    st.just(Directive('/tool weather.today {"city": "Oslo"}', "weather.today", "denied")),
    st.just(Directive('/tool math.evaluate {"expression": "1 +', "math.evaluate", "error")),
)


@dataclass(frozen=True)
class Case:
    directives: list[Directive]
    words: list[str]
    tier: str | None
    # None: let it run; 0: cancel right after creation; k: cancel once it has k events.
    cancel_after: int | None

    @property
    def input(self) -> str:
        return "\n".join([*(d.line for d in self.directives), " ".join(self.words)])


cases = st.builds(
    Case,
    directives=st.lists(directive, max_size=3),
    words=st.lists(word, min_size=1, max_size=6),
    tier=st.sampled_from([None, "fast", "standard", "deep"]),
    cancel_after=st.one_of(st.none(), st.just(0), st.integers(1, 9)),
)

# -- the property ------------------------------------------------------------------------

STATUS_AFTER = {"run.completed": "completed", "run.cancelled": "cancelled", "run.failed": "failed"}


async def play(api: Api, key: str, case: Case) -> tuple[str, list[dict[str, Any]]]:
    thread = await api.client.post("/v1/threads", json={}, headers=auth(key))
    assert thread.status_code == 201, thread.text
    body: dict[str, Any] = {"thread_id": thread.json()["id"], "input": case.input}
    if case.tier is not None:
        body["tier"] = case.tier
    created = await api.client.post("/v1/runs", json=body, headers=auth(key))
    assert created.status_code == 201, created.text
    run_id = str(created.json()["id"])
    if case.cancel_after is not None:
        if case.cancel_after:
            await wait_for_events(api, key, run_id, case.cancel_after)
        cancelled = await api.client.post(f"/v1/runs/{run_id}/cancel", json={}, headers=auth(key))
        # The worker may have finished first; then the cancel is refused as a conflict.
        assert cancelled.status_code in (200, 409), cancelled.text
        if cancelled.status_code == 200:
            assert cancelled.json()["status"] == "cancelled"
        else:
            assert cancelled.json()["code"] == "conflict", cancelled.json()
    return run_id, await wait_for_end(api, key, run_id)


async def play_or_give_up(
    api: Api, key: str, case: Case, stuck: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """`play`, unless an earlier example found the worker stuck: then fail at once.

    A stuck worker has nothing to do with the input, and waiting out the safety bound for
    every example Hypothesis tries while shrinking would take many minutes.
    """
    if not stuck:
        try:
            return await play(api, key, case)
        except RunStuck as exc:
            stuck.append(str(exc))
    raise RunStuck(stuck[0])


@pytest.fixture
def stuck() -> list[str]:
    return []


def check_outcome(case: Case, events: list[dict[str, Any]]) -> None:
    """What the scripted provider must have done with this input."""
    types = [e["type"] for e in events]
    if case.cancel_after is None:
        assert types[-1] == "run.completed", types
    else:
        assert types[-1] in ("run.completed", "run.cancelled"), types
    calls = [e["data"] for e in events if e["type"] == "tool.called"]
    receipts = {
        e["data"]["call_id"]: e["data"]["receipt"] for e in events if e["type"] == "tool.completed"
    }
    # Calls are made in the input's order, all in the first turn.
    assert [c["tool"] for c in calls] == [d.tool for d in case.directives][: len(calls)]
    for call, expected in zip(calls, case.directives, strict=False):
        receipt = receipts.get(call["call_id"])
        if receipt is None:
            continue  # cancelled before the tool ran
        assert receipt["status"] == expected.status, (expected, receipt)
        if expected.result is not None:
            assert receipt["result"] == expected.result
    if types[-1] == "run.completed":
        assert len(calls) == len(case.directives) == len(receipts)
        (answer,) = messages_text(events)
        assert answer == events[-1]["data"]["output"]
        assert answer.split("\n")[0] == " ".join(case.words)
        assert len(answer.split("\n")) == 1 + len(case.directives)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases)
async def test_the_state_folded_from_a_runs_log_is_the_live_run_and_verify_agrees(
    api: Api, stuck: list[str], case: Case
) -> None:
    key = await api.key("props", ("admin",))
    run_id, events = await play_or_give_up(api, key, case, stuck)

    assert_log_invariants(events, run_id)
    check_outcome(case, events)

    at_end = {"X-Nome-Min-Position": str(events[-1]["position"])}
    live = await api.client.get(f"/v1/runs/{run_id}", headers=auth(key, **at_end))
    folded = await api.client.get(f"/v1/runs/{run_id}/state", headers=auth(key))
    assert live.status_code == 200 and folded.status_code == 200, (live.text, folded.text)
    run, state = live.json(), folded.json()
    assert state["seq"] == len(events)
    for field in ("status", "event_count", "usage", "error", "ended_at", "started_at"):
        assert run[field] == state["run"][field], (field, run[field], state["run"][field])
    assert run == state["run"]
    assert run["event_count"] == len(events)
    assert events[-1]["type"] in TERMINAL
    assert run["status"] == STATUS_AFTER[events[-1]["type"]]

    verdict = await api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key))
    assert verdict.status_code == 200, verdict.text
    assert verdict.json() == {
        "deterministic": True,
        "events_compared": len(events),
        "divergence": None,
    }, verdict.json()
