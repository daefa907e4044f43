"""Re-execute a recorded run's harness against its recorded model and tool outputs.

The harness runs again with the same code the worker used, but the model is the recorded
one (the scripted provider is deterministic, so it simply runs again and its answer is
checked too) and every tool returns its recorded receipt. Nothing is appended: the steps
it produces are compared with the log. Ids are generated afresh, so both sides are compared
with ids replaced by the order in which they first appear, and a message's deltas are
compared as their concatenation (their boundaries depend on timing, not on logic).
Cancellation and provider failure come from outside the harness: the log is compared up
to them. So do the outcomes of the world a run of harness 2 met: a failed model attempt
(replayed as the error it was, so the harness discards and retries as it did), a call
whose backend was down, or whose worker died while running it (replayed as such, so the
harness defers, runs again or records `unknown` as it did), and every wait, which the
replay does not sit out.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec

from nome_core.approvals.events import ApprovalResolved
from nome_core.events import Decided, Draft, Event, Head, Meta, seal
from nome_core.runs import scripted
from nome_core.runs.context import ChatMessage
from nome_core.runs.events import (
    HARNESS,
    MessageCompleted,
    MessageDiscarded,
    ModelRetryScheduled,
    RunCancelled,
    RunFailed,
    RunStarted,
)
from nome_core.runs.harness import Harness, ModelError, Postponed, Provider, Wait, next_step
from nome_core.runs.scripted import ToolRequest
from nome_core.runs.state import RunState, Started, evolve
from nome_core.tools.events import (
    PolicyDecision,
    ToolCalled,
    ToolCompleted,
    ToolDeferred,
    ToolStarted,
)
from nome_core.tools.executor import BackendUnreachable, ToolQueued
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call

_ID_KEYS = frozenset(
    {
        "message_id",
        "call_id",
        "work_item_id",
        "id",
        "run_id",
        "note_id",
        "approval_id",
        "idempotency_key",
    }
)
# Set from the clock when the step ran (or how long it waited); replayed steps run at
# another time and wait for nothing.
_TIME_KEYS = frozenset({"expires_at", "retry_after_s"})
_EXTERNAL = frozenset({RunCancelled.type, RunFailed.type})


class Divergence(msgspec.Struct, kw_only=True):
    seq: int
    expected: Any
    actual: Any


class Verdict(msgspec.Struct, kw_only=True):
    deterministic: bool
    events_compared: int
    divergence: Divergence | None


class _Clock:
    """Fresh ids and a fixed time: neither is compared."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def now(self) -> str:
        return "1970-01-01T00:00:00.000000Z"

    def new_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._n):012d}"


class _Cut:
    """Where a worker died mid-turn and its successor closed the message."""


class _Fail(msgspec.Struct, frozen=True):
    """Where a model attempt failed, as the harness heard it."""

    message: str
    retryable: bool
    retry_after_s: float | None = None


Chunk = str | ToolRequest | _Cut | _Fail


class _RecordedModel:
    """Plays back the model turns as they were recorded (for non-deterministic providers)."""

    deterministic = True
    conversational = False

    def __init__(self, model: str, turns: list[list[Chunk]]) -> None:
        self.model = model
        self._turns = iter(turns)

    async def turn(
        self, state: RunState, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[str | ToolRequest, None]:
        for chunk in next(self._turns, []):
            if isinstance(chunk, _Cut):
                raise _Interrupted()
            if isinstance(chunk, _Fail):
                raise ModelError(
                    chunk.message, retryable=chunk.retryable, retry_after_s=chunk.retry_after_s
                )
            yield chunk


class _Interrupted(Exception):
    pass


class _Died(Exception):
    """The worker running a call died before recording its outcome."""


class _Scripted:
    model = scripted.MODEL
    deterministic = True
    conversational = False

    async def turn(
        self, state: RunState, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[str | ToolRequest, None]:
        for chunk in scripted.turn(state):
            yield chunk


class _RecordedContext:
    """The thread's seq the run started at, as recorded (the history is not replayed: the
    model's answers are)."""

    def __init__(self, thread_seq: int | None) -> None:
        self._thread_seq = thread_seq

    async def thread_seq(self, state: RunState) -> int | None:
        return self._thread_seq

    async def conversation(self, state: RunState) -> list[ChatMessage]:
        return []


# What one attempt at a call came to: done (its receipt), deferred (the reason), or nothing
# recorded (its worker died).
_DONE, _OPEN = "done", "open"


class _RecordedTools:
    def __init__(
        self,
        policies: list[PolicyDecision],
        receipts: list[ToolReceipt | None],
        attempts: list[list[str | ToolDeferred]],
        idempotent: list[bool],
    ) -> None:
        self._policies = policies
        self._receipts = receipts
        self._attempts = attempts
        self._idempotent = idempotent
        self._asked = 0

    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision:
        # What the policy matrix decided is an input of the run (it has versions of its own),
        # so it is played back like the model's output.
        index = self._asked
        self._asked += 1
        return self._policies[index] if index < len(self._policies) else _MISSING_POLICY

    async def idempotent(self, state: RunState, call: Call) -> bool:
        index = self._index(state, call)
        return index < len(self._idempotent) and self._idempotent[index]

    async def unfinished(self, state: RunState, call: Call, attempt: Started) -> ToolReceipt:
        return self._receipt(state, call)

    async def execute(self, state: RunState, call: Call) -> ToolReceipt:
        started = state.attempt(call.call_id)
        if started is not None:
            index = self._index(state, call)
            attempts = self._attempts[index] if index < len(self._attempts) else []
            if started.attempt > len(attempts):
                raise _Diverged()
            outcome = attempts[started.attempt - 1]
            if outcome == _OPEN:
                raise _Died()
            if isinstance(outcome, ToolDeferred):
                raise ToolQueued(2.0) from BackendUnreachable(outcome.reason)
        return self._receipt(state, call)

    def _index(self, state: RunState, call: Call) -> int:
        return next(i for i, c in enumerate(state.calls) if c.call_id == call.call_id)

    def _receipt(self, state: RunState, call: Call) -> ToolReceipt:
        index = self._index(state, call)
        receipt = self._receipts[index] if index < len(self._receipts) else None
        if receipt is None:
            raise _Diverged()
        # The recorded receipt, under the ids of the call being replayed.
        return msgspec.structs.replace(
            receipt,
            run_id=state.id,
            call_id=call.call_id,
            work_item_id=call.work_item_id,
            approval_id=call.approval_id,
        )


_MISSING_POLICY = PolicyDecision(decision="deny", rule="not_recorded")


class _Diverged(Exception):
    pass


async def verify(events: Sequence[Event]) -> Verdict:
    """Compare a run's log with what its harness produces from the recorded outputs."""
    if not events:
        return Verdict(deterministic=False, events_compared=0, divergence=None)
    first = events[0]
    state = evolve(None, first)
    assert state is not None
    recorded = list(events[1:])
    cut = next((i for i, e in enumerate(recorded) if e.type in _EXTERNAL), len(recorded))
    compared_log = recorded[:cut]
    calls = [e.data for e in recorded if isinstance(e.data, ToolCalled)]
    receipts_by_call = {
        e.data.call_id: e.data.receipt for e in recorded if isinstance(e.data, ToolCompleted)
    }
    attempts, idempotent = _attempts_of(recorded)
    tools = _RecordedTools(
        [c.policy for c in calls],
        [receipts_by_call.get(c.call_id) for c in calls],
        [attempts.get(c.call_id, []) for c in calls],
        [idempotent.get(c.call_id, False) for c in calls],
    )
    started = next((e.data for e in recorded if isinstance(e.data, RunStarted)), None)
    version = started.harness if started is not None else HARNESS
    provider: Provider = (
        _Scripted()
        if state.agent.provider == "scripted"
        else _RecordedModel(_model_of(recorded), _turns_of(recorded, version))
    )
    produced: list[Event] = []
    clock = _Clock()
    head = Head(1, first.hash)

    latest = state

    async def record(seen: RunState, drafts: Sequence[Decided]) -> RunState:
        nonlocal head
        sealed = seal(
            drafts,
            stream_id=seen.id,
            head=head,
            tenant_id=seen.tenant_id,
            thread_id=seen.thread_id,
            run_id=seen.id,
            meta=Meta(),
            clock=clock,
        )
        nonlocal latest
        produced.extend(sealed)
        head = Head(sealed[-1].seq, sealed[-1].hash) if sealed else head
        next_state = seen
        for event in sealed:
            next_state = evolve(next_state, event)  # type: ignore[assignment]
        if len(produced) > len(compared_log) + 64:
            raise _Diverged()  # runaway: it will not match anyway
        latest = next_state
        return next_state

    harness = Harness(
        lambda _: provider,
        tools,
        clock,
        context=_RecordedContext(started.thread_seq if started is not None else None),
        flush_chars=1,
        flush_seconds=1e9,
        version=version,
        wait_for_time=False,
    )
    resolutions = [e.data for e in recorded if isinstance(e.data, ApprovalResolved)]
    refusals = {
        e.data.receipt.approval_id: e.data.receipt
        for e in recorded
        if isinstance(e.data, ToolCompleted) and e.data.receipt.status != "ok"
    }
    with contextlib.suppress(_Diverged):
        while True:
            try:
                state = await harness.drive(state, record)
            except _Interrupted:
                # The worker that took over closed the half-said message: do the same.
                state = await record(latest, _close_partial(latest))
                continue
            except (_Died, Postponed):
                # A call's worker died, or the run waited here: go on where the log does.
                state = latest
                continue
            if not isinstance(next_step(state), Wait):
                break
            # A person (or the expiry job) answered: feed the recorded answer back in.
            waiting = next((c for c in state.calls if c.approval_status == "pending"), None)
            if waiting is None:
                # Withdrawn without a receipt: the run was cancelled while it waited.
                break
            asked = [c for c in state.calls if c.approval_id is not None]
            index = asked.index(waiting)
            if index >= len(resolutions):
                break  # still waiting when the log ends
            state = await record(state, _answer(waiting, resolutions[index], refusals))
    expected = _normalise(produced)
    actual = _normalise(compared_log)
    stopped_from_outside = cut < len(recorded)
    for index, (_, want) in enumerate(expected):
        if index >= len(actual):
            if stopped_from_outside:
                break  # the run was stopped before this step
            return _diverged(recorded, index, want, None)
        seq, got = actual[index]
        last = index == len(actual) - 1
        if want != got and not (stopped_from_outside and last and _is_prefix(got, want)):
            return _diverged(recorded, index, want, (seq, got))
    if len(actual) > len(expected):
        return _diverged(recorded, len(expected), None, actual[len(expected)])
    return Verdict(deterministic=True, events_compared=len(events), divergence=None)


def _close_partial(state: RunState) -> list[Decided]:
    partial = next((m for m in state.messages if not m.completed), None)
    if partial is None:
        raise _Diverged()
    closing = MessageCompleted(
        message_id=partial.message_id, role="assistant", content=partial.text, interrupted=True
    )
    return [Draft(closing, partial.work_item_id)]


def _answer(
    call: Call, resolution: ApprovalResolved, refusals: dict[str | None, ToolReceipt]
) -> list[Decided]:
    drafts: list[Decided] = [
        Draft(msgspec.structs.replace(resolution, approval_id=call.approval_id), call.work_item_id)
    ]
    refusal = refusals.get(resolution.approval_id)
    if refusal is not None:
        receipt = msgspec.structs.replace(
            refusal,
            call_id=call.call_id,
            work_item_id=call.work_item_id,
            approval_id=call.approval_id,
        )
        drafts.append(
            Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
        )
    return drafts


def _diverged(
    recorded: list[Event], index: int, expected: Any, actual: tuple[int, Any] | None
) -> Verdict:
    seq = actual[0] if actual else (recorded[-1].seq + 1 if recorded else 2)
    return Verdict(
        deterministic=False,
        events_compared=index + 1,
        divergence=Divergence(seq=seq, expected=expected, actual=actual[1] if actual else None),
    )


def _normalise(events: Sequence[Event]) -> list[tuple[int, dict[str, Any]]]:
    """(seq, step) pairs: each message's consecutive deltas merged, ids renamed by order."""
    merged: list[tuple[int, dict[str, Any]]] = []
    names: dict[str, str] = {}
    last_delta: str | None = None
    for event in events:
        data = msgspec.to_builtins(event.data)
        if event.type == "message.delta" and last_delta == data["message_id"]:
            merged[-1][1]["data"]["text"] += data["text"]
            continue
        last_delta = data["message_id"] if event.type == "message.delta" else None
        step = {
            "type": event.type,
            "work_item_id": _rename(event.work_item_id, names),
            "data": _ids(data, names),
        }
        merged.append((event.seq, step))
    return merged


def _ids(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _rename(v, names) if k in _ID_KEYS and isinstance(v, str) else _ids(v, names)
            for k, v in value.items()
            if k not in _TIME_KEYS
        }
    if isinstance(value, list):
        return [_ids(v, names) for v in value]
    return value


def _rename(value: str | None, names: dict[str, str]) -> str | None:
    if value is None:
        return None
    if value not in names:
        names[value] = f"#{len(names) + 1}"
    return names[value]


def _is_prefix(got: dict[str, Any], want: dict[str, Any]) -> bool:
    if got["type"] != "message.delta" or want["type"] != "message.delta":
        return False
    return str(want["data"]["text"]).startswith(str(got["data"]["text"]))


def _model_of(recorded: Sequence[Event]) -> str:
    started = next((e for e in recorded if e.type == "run.started"), None)
    return str(getattr(started.data, "model", "")) if started else ""


def _attempts_of(
    recorded: Sequence[Event],
) -> tuple[dict[str, list[str | ToolDeferred]], dict[str, bool]]:
    """Each call's attempts (harness 2) and whether its tool said it may run again."""
    attempts: dict[str, list[str | ToolDeferred]] = {}
    idempotent: dict[str, bool] = {}
    for event in recorded:
        match event.data:
            case ToolStarted(call_id=call_id) as started:
                attempts.setdefault(call_id, []).append(_OPEN)
                idempotent.setdefault(call_id, started.idempotent)
            case ToolDeferred(call_id=call_id) as deferred if attempts.get(call_id):
                attempts[call_id][-1] = deferred
            case ToolCompleted(call_id=call_id, receipt=receipt) if attempts.get(call_id):
                # An `unknown` receipt is written for an attempt whose worker died.
                if receipt.status != "unknown":
                    attempts[call_id][-1] = _DONE
    return attempts, idempotent


def _turns_of(recorded: Sequence[Event], version: int) -> list[list[Chunk]]:
    """Recorded model turns: text, then tool requests; a turn ends where tools run, where
    a taken-over turn was cut off, or (harness 2) where a model attempt failed."""
    turns: list[list[Chunk]] = []
    current: list[Chunk] = []
    discarded = ""
    for event in recorded:
        data = event.data
        if isinstance(data, MessageCompleted) and data.interrupted:
            turns.append([*current, _Cut()])
            current = []
        elif isinstance(data, MessageDiscarded):
            discarded = data.reason
        elif isinstance(data, ModelRetryScheduled):
            turns.append([*current, _Fail(data.error.message, True, data.retry_after_s)])
            current = []
        elif isinstance(data, RunFailed) and version >= 2:
            turns.append([*current, _Fail(discarded or data.error.message, False)])
            current = []
        elif event.type == "message.delta":
            current.append(data.text)  # type: ignore[attr-defined]
        elif isinstance(data, ToolCalled):
            current.append(ToolRequest(data.tool, data.arguments))
        elif event.type in ("tool.completed", "run.completed") and current:
            turns.append(current)
            current = []
    if current:
        turns.append(current)
    return turns
