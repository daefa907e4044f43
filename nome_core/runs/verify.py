"""Re-execute a recorded run's harness against its recorded model and tool outputs.

The harness runs again with the same code the worker used, but the model is the recorded
one (the scripted provider is deterministic, so it simply runs again and its answer is
checked too) and every tool returns its recorded receipt. Nothing is appended: the steps
it produces are compared with the log. Ids are generated afresh, so both sides are compared
with ids replaced by the order in which they first appear, and a message's deltas are
compared as their concatenation (their boundaries depend on timing, not on logic).
Cancellation and provider failure come from outside the harness: the log is compared up
to them.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from nome_core.approvals.events import ApprovalResolved
from nome_core.events import Decided, Draft, Event, Head, Meta, seal
from nome_core.runs import scripted
from nome_core.runs.events import MessageCompleted, RunCancelled, RunFailed
from nome_core.runs.harness import Harness, Provider, Wait, next_step
from nome_core.runs.scripted import ToolRequest
from nome_core.runs.state import RunState, evolve
from nome_core.tools.events import PolicyDecision, ToolCalled, ToolCompleted
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call

_ID_KEYS = frozenset(
    {"message_id", "call_id", "work_item_id", "id", "run_id", "note_id", "approval_id"}
)
# Set from the clock when the step ran; replayed steps run at another time.
_TIME_KEYS = frozenset({"expires_at"})
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


class _RecordedModel:
    """Plays back the model turns as they were recorded (for non-deterministic providers)."""

    deterministic = True

    def __init__(self, model: str, turns: list[list[str | ToolRequest | _Cut]]) -> None:
        self.model = model
        self._turns = iter(turns)

    async def turn(self, state: RunState) -> AsyncIterator[str | ToolRequest]:
        for chunk in next(self._turns, []):
            if isinstance(chunk, _Cut):
                raise _Interrupted()
            yield chunk


class _Cut:
    """Where a worker died mid-turn and its successor closed the message."""


class _Interrupted(Exception):
    pass


class _Scripted:
    model = scripted.MODEL
    deterministic = True

    async def turn(self, state: RunState) -> AsyncIterator[str | ToolRequest]:
        for chunk in scripted.turn(state):
            yield chunk


class _RecordedTools:
    def __init__(self, policies: list[PolicyDecision], receipts: list[ToolReceipt | None]) -> None:
        self._policies = policies
        self._receipts = receipts
        self._asked = 0

    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision:
        # What the policy matrix decided is an input of the run (it has versions of its own),
        # so it is played back like the model's output.
        index = self._asked
        self._asked += 1
        return self._policies[index] if index < len(self._policies) else _MISSING_POLICY

    async def execute(self, state: RunState, call: Call) -> ToolReceipt:
        index = next(i for i, c in enumerate(state.calls) if c.call_id == call.call_id)
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
    tools = _RecordedTools(
        [c.policy for c in calls], [receipts_by_call.get(c.call_id) for c in calls]
    )
    provider: Provider = (
        _Scripted()
        if state.agent.provider == "scripted"
        else _RecordedModel(_model_of(recorded), _turns_of(recorded))
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

    harness = Harness(lambda _: provider, tools, clock, flush_chars=1, flush_seconds=1e9)
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


def _turns_of(recorded: Sequence[Event]) -> list[list[str | ToolRequest | _Cut]]:
    """Recorded model turns: text, then tool requests; a turn ends where tools run, or where
    a taken-over turn was cut off."""
    turns: list[list[str | ToolRequest | _Cut]] = []
    current: list[str | ToolRequest | _Cut] = []
    for event in recorded:
        data = event.data
        if isinstance(data, MessageCompleted) and data.interrupted:
            turns.append([*current, _Cut()])
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
