"""The agent loop, pure: what a run folds from its fences, retries and discards, the step a
worker takes next on it, the back-off between model attempts, and the conversation a model
is sent (the run's rounds, the thread's history, the budget)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nome_core.events import Client, Decided, Draft
from nome_core.runs.context import ChatMessage, EndedRun, fit, history_slots, run_units, tokens
from nome_core.runs.decide import input_message_id
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    ModelRetryScheduled,
    RunCreated,
    RunStarted,
)
from nome_core.runs.harness import MODEL_BACKOFF_CAP_S, ModelTurn, RunTool, Unfinished, backoff
from nome_core.runs.harness import next_step as step_on
from nome_core.runs.state import RunState, evolve
from nome_core.threads import state as threads
from nome_core.threads.events import MessageAdded, RunAdmitted, RunReleased, ThreadCreated
from nome_core.tools.events import PolicyDecision, ToolCalled, ToolCompleted, ToolDeferred
from nome_core.tools.events import ToolStarted as Started
from tests.support.streams import MemoryStream, receipt_of

TENANT = "00000000-0000-4000-8000-0000000000a1"
THREAD = "00000000-0000-4000-8000-0000000000b1"
RUN = "00000000-0000-4000-8000-0000000000c1"
EARLIER = "00000000-0000-4000-8000-0000000000c0"
WAITING = "00000000-0000-4000-8000-0000000000c2"
ALLOW = PolicyDecision(decision="allow", rule="policy", version=1)
AGENT = AgentSnapshot(provider="openai", model="m", instructions="Be brief.", tools=["clock.now"])


def run_stream(*drafts: Decided) -> MemoryStream[RunState]:
    stream: MemoryStream[RunState] = MemoryStream(
        evolve, stream_id=RUN, tenant_id=TENANT, thread_id=THREAD, run_id=RUN
    )
    created = RunCreated(
        input="hello there",
        agent_id="agent-1",
        tier="standard",
        domain_hints=[],
        client=Client(),
        agent=AGENT,
        creator_roles=["member"],
    )
    stream.append([created, RunStarted(model="m", harness=2, thread_seq=3)])
    for draft in drafts:
        stream.append([draft])
    return stream


def called(call_id: str) -> Draft:
    return Draft(
        ToolCalled(call_id=call_id, tool="clock.now", arguments={"n": call_id}, policy=ALLOW),
        f"w-{call_id}",
    )


def started(call_id: str, attempt: int = 1, idempotent: bool = False) -> Draft:
    return Draft(
        Started(call_id=call_id, idempotency_key=call_id, idempotent=idempotent, attempt=attempt),
        f"w-{call_id}",
    )


def done(stream: MemoryStream[RunState], call_id: str, result: object) -> None:
    call = stream.live().call(call_id)
    assert call is not None
    completed = ToolCompleted(call_id=call_id, receipt=receipt_of(call, "ok", result))
    stream.append([Draft(completed, call.work_item_id)])


def said(message_id: str, text: str) -> Draft:
    return Draft(MessageCompleted(message_id=message_id, role="assistant", content=text), "w")


# -- what a run folds ---------------------------------------------------------------------


def test_a_call_started_without_an_outcome_is_unfinished_and_left_to_be_resolved() -> None:
    stream = run_stream(called("c1"), started("c1", idempotent=True))
    state = stream.live()
    (call,) = state.calls
    step = step_on(state)
    assert isinstance(step, Unfinished) and step.call == call
    assert step.attempt.attempt == 1 and step.attempt.idempotent
    assert step.attempt.at == stream.events[-1].at


def test_a_deferred_call_is_started_afresh_but_not_before_its_backend_may_be_back() -> None:
    deferred = ToolDeferred(call_id="c1", reason="down", retry_after_s=4.0)
    stream = run_stream(called("c1"), started("c1"), Draft(deferred, "w-c1"))
    state = stream.live()
    assert isinstance(step_on(state), RunTool)
    attempt = state.attempt("c1")
    assert attempt is not None and not attempt.open
    assert attempt.not_before == "2025-01-01T00:00:09.000000Z"  # its time + 4 s


def test_a_completed_call_closes_its_attempt_and_the_model_takes_its_turn() -> None:
    stream = run_stream(called("c1"), started("c1"))
    done(stream, "c1", {"now": "then"})
    state = stream.live()
    attempt = state.attempt("c1")
    assert attempt is not None and not attempt.open
    assert isinstance(step_on(state), ModelTurn)


def test_a_discarded_message_is_gone_and_a_scheduled_retry_counts_the_failed_attempt() -> None:
    delta = Draft(MessageDelta(message_id="m1", text="Half an"), "w")
    error = ErrorInfo(code="model_error", message="model server answered 500")
    retry = ModelRetryScheduled(attempt=1, error=error, retry_after_s=2.5)
    stream = run_stream(delta, Draft(MessageDiscarded(message_id="m1", reason="500"), "w"), retry)
    state = stream.live()
    assert state.messages == ()
    assert state.model_failures == 1
    assert state.model_not_before == "2025-01-01T00:00:07.500000Z"
    step = step_on(state)
    assert isinstance(step, ModelTurn) and step.partial is None


def test_a_turn_that_the_model_finishes_resets_its_failed_attempts() -> None:
    error = ErrorInfo(code="model_error", message="x")
    retry = ModelRetryScheduled(attempt=2, error=error, retry_after_s=1.0)
    state = run_stream(retry, said("m1", "Fine.")).live()
    assert state.model_failures == 0 and state.model_not_before is None


@given(st.text(min_size=1, max_size=36), st.integers(min_value=1, max_value=20))
def test_the_back_off_doubles_per_attempt_within_its_jitter_and_cap(run_id: str, n: int) -> None:
    delay = backoff(run_id, n, 1.0)
    ceiling = min(MODEL_BACKOFF_CAP_S, 2.0 ** (n - 1))
    assert ceiling / 2 <= delay <= ceiling
    assert backoff(run_id, n, 1.0) == delay  # one value, whichever worker computes it


# -- the conversation -----------------------------------------------------------------------


def test_each_round_of_a_run_is_its_own_assistant_turn_followed_by_its_calls_results() -> None:
    stream = run_stream(said("m1", "Let me look."), called("c1"), started("c1"))
    done(stream, "c1", {"now": "noon"})
    stream.append([called("c2"), called("c3")])
    done(stream, "c2", {"now": "one"})
    done(stream, "c3", {"now": "two"})
    stream.append([said("m2", "It is noon.")])

    units = run_units(stream.live())

    def call_of(call_id: str) -> tuple[str, str, object]:
        return (call_id, "clock.now", {"n": call_id})

    assert [[(m.role, m.content, m.tool_call_id) for m in unit] for unit in units] == [
        [
            ("assistant", "Let me look.", None),
            ("tool", 'clock.now: {"now":"noon"}', "c1"),
        ],
        [
            ("assistant", None, None),
            ("tool", 'clock.now: {"now":"one"}', "c2"),
            ("tool", 'clock.now: {"now":"two"}', "c3"),
        ],
        [("assistant", "It is noon.", None)],
    ]
    assert [[(c.id, c.tool, c.arguments) for c in unit[0].tool_calls] for unit in units] == [
        [call_of("c1")],
        [call_of("c2"), call_of("c3")],
        [],
    ]


def thread_events() -> MemoryStream[threads.ThreadState]:
    stream: MemoryStream[threads.ThreadState] = MemoryStream(
        threads.evolve, stream_id=THREAD, tenant_id=TENANT, thread_id=THREAD
    )

    def of_run(run_id: str, role: str, content: str, message_id: str) -> MessageAdded:
        return MessageAdded(message_id=message_id, role=role, content=content, episode_id=run_id)

    stream.append(
        [
            ThreadCreated(title="t", metadata={}),
            MessageAdded(message_id="u1", role="user", content="Hi, I am Ada."),
            of_run(EARLIER, "user", "What is 2+2?", input_message_id(EARLIER)),
            RunAdmitted(run_id=EARLIER),
            of_run(EARLIER, "system", "a note", "n1"),
            of_run(EARLIER, "assistant", "4.", "a1"),
            RunReleased(run_id=EARLIER),
            MessageAdded(message_id="s1", role="system", content="Be brief."),
            of_run(RUN, "user", "And 3+3?", input_message_id(RUN)),
            RunAdmitted(run_id=RUN),
            of_run(WAITING, "user", "And 4+4?", input_message_id(WAITING)),
            MessageAdded(message_id="u2", role="user", content="said after the start"),
        ]
    )
    return stream


def test_the_history_is_the_thread_at_the_runs_start_with_each_ended_run_at_its_input() -> None:
    events = thread_events().events
    start = events[-2].seq  # the run started before the last message came

    slots = history_slots(events, upto=start, run_id=RUN)

    # People's messages in order; the earlier run as its turns (not its answer and note as
    # thread messages); not this run's input (sent last) nor a queued run's question.
    assert slots == [
        ChatMessage(role="user", content="Hi, I am Ada."),
        EndedRun(EARLIER, "What is 2+2?"),
        ChatMessage(role="system", content="Be brief."),
    ]


def unit(role: str, words: int) -> tuple[ChatMessage, ...]:
    return (ChatMessage(role="user" if role == "user" else "system", content="w " * words),)


def test_the_budget_keeps_the_newest_history_that_fits_and_drops_the_oldest_first() -> None:
    slots = [unit("user", 5)[0], unit("system", 3)[0], unit("user", 4)[0]]
    assert fit(slots, lambda _: [], 20) == [(s,) for s in slots]
    assert fit(slots, lambda _: [], 7) == [(slots[1],), (slots[2],)]
    assert fit(slots, lambda _: [], 6) == [(slots[2],)]
    assert fit(slots, lambda _: [], 3) == []


def test_a_tool_call_is_kept_or_dropped_with_its_result_never_alone() -> None:
    stream = run_stream(said("m1", "Looking."), called("c1"), started("c1"))
    done(stream, "c1", {"now": "noon"})
    stream.append([said("m2", "Noon.")])
    turns = run_units(stream.live())
    call_turn, answer = turns
    slots = [EndedRun(EARLIER, "What time is it?")]
    room = tokens(answer) + tokens(call_turn) - 1  # the call fits, its result does not

    kept = fit(slots, lambda _: turns, room)

    assert kept == [answer]
    assert all(m.role != "tool" for u in kept for m in u)


def test_a_call_costs_its_name_and_its_arguments_words() -> None:
    stream = run_stream(called("c1"), started("c1"))
    done(stream, "c1", {"now": "noon"})
    (turn,) = run_units(stream.live())
    # The call: its name (1) and `{"n": "c1"}` (2); its result: `clock.now: {...}` (2).
    assert tokens(turn) == 1 + 2 + 2


def test_a_call_not_finished_when_its_run_ended_is_not_sent() -> None:
    state = run_stream(said("m1", "Let me look."), called("c1"), started("c1")).live()
    assert [[(m.role, m.content, m.tool_calls) for m in u] for u in run_units(state)] == [
        [("assistant", "Let me look.", ())]
    ]
