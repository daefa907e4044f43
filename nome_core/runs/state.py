"""Run state folded from the run's log. The worker, /state?at=, verify and the API all use it."""

from __future__ import annotations

from datetime import timedelta
from typing import Final, Literal, get_args

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.approvals.state import evolve_calls
from nome_core.clock import format_time, parse_time
from nome_core.events import Client, Event
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    ModelRetryScheduled,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.tools.events import ToolCalled, ToolCompleted, ToolDeferred, ToolStarted
from nome_core.tools.state import Call

RunStatus = Literal["pending", "active", "completed", "failed", "cancelled"]
RUN_STATUSES: Final[tuple[RunStatus, ...]] = get_args(RunStatus)
TERMINAL: Final[frozenset[RunStatus]] = frozenset({"completed", "failed", "cancelled"})


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A message the run is writing or has written."""

    message_id: str
    work_item_id: str | None
    text: str = ""
    completed: bool = False


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """The last attempt at one tool call: when it started, and whether it is still open
    (started, without an outcome or a deferral)."""

    call_id: str
    at: str
    attempt: int
    idempotent: bool
    open: bool = True
    # Deferred (its backend was unreachable): not started again before this time.
    not_before: str | None = None


class Round(msgspec.Struct, frozen=True, kw_only=True):
    """One model turn as the model said it: its text (a message) and the calls it made."""

    message_id: str | None = None
    call_ids: tuple[str, ...] = ()


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    thread_id: str
    agent_id: str
    input: str
    tier: str
    domain_hints: list[str]
    client: Client
    agent: AgentSnapshot
    creator_roles: list[str]
    created_at: str
    status: RunStatus = "pending"
    started_at: str | None = None
    ended_at: str | None = None
    model: str | None = None
    event_count: int = 0
    calls: tuple[Call, ...] = ()
    messages: tuple[Message, ...] = ()
    usage: Usage = Usage()
    output: str | None = None
    error: ErrorInfo | None = None
    cancelled_by: str | None = None
    # The harness that started the run (RunStarted.harness) and the thread's seq then.
    harness: int = 1
    thread_seq: int | None = None
    started: tuple[Started, ...] = ()
    rounds: tuple[Round, ...] = ()
    # The last event was the model's (its text or a call): a call now joins its round.
    round_open: bool = False
    # Failed attempts of the current model turn, and when it may be asked again.
    model_failures: int = 0
    model_not_before: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def awaiting_approval(self) -> bool:
        return any(c.approval_status == "pending" for c in self.calls)

    def call(self, call_id: str) -> Call | None:
        return next((c for c in self.calls if c.call_id == call_id), None)

    def attempt(self, call_id: str) -> Started | None:
        """The last attempt at a call, if one started."""
        return next((s for s in self.started if s.call_id == call_id), None)


def evolve(state: RunState | None, event: Event) -> RunState | None:
    if state is None:
        match event.data:
            case RunCreated() as created:
                return RunState(
                    id=event.stream_id,
                    tenant_id=event.tenant_id,
                    thread_id=event.thread_id or "",
                    agent_id=created.agent_id,
                    input=created.input,
                    tier=created.tier,
                    domain_hints=created.domain_hints,
                    client=created.client,
                    agent=created.agent,
                    creator_roles=created.creator_roles,
                    created_at=event.at,
                    event_count=1,
                )
        return None
    # Only the model's own events keep its round open.
    joins_round = state.round_open
    state = msgspec.structs.replace(state, event_count=state.event_count + 1, round_open=False)
    match event.data:
        case RunStarted(model=model, harness=harness, thread_seq=thread_seq):
            return msgspec.structs.replace(
                state,
                status="active",
                started_at=event.at,
                model=model,
                harness=harness,
                thread_seq=thread_seq,
            )
        case MessageDelta(message_id=message_id, text=text):
            return _with_message(state, message_id, event.work_item_id, text, completed=False)
        case MessageCompleted(message_id=message_id, content=content):
            # The completed content is authoritative (deltas concatenate to it).
            messages = tuple(m for m in state.messages if m.message_id != message_id)
            done = Message(
                message_id=message_id, work_item_id=event.work_item_id, text=content, completed=True
            )
            # A model's text opens its turn's round; the turn succeeded.
            return msgspec.structs.replace(
                state,
                messages=(*messages, done),
                rounds=(*state.rounds, Round(message_id=message_id)),
                round_open=True,
                model_failures=0,
                model_not_before=None,
            )
        case MessageDiscarded(message_id=message_id):
            messages = tuple(m for m in state.messages if m.message_id != message_id)
            return msgspec.structs.replace(state, messages=messages)
        case ModelRetryScheduled(attempt=attempt, retry_after_s=retry_after_s):
            not_before = format_time(parse_time(event.at) + timedelta(seconds=retry_after_s))
            return msgspec.structs.replace(
                state, model_failures=attempt, model_not_before=not_before
            )
        case ToolCalled(call_id=call_id):
            if joins_round and state.rounds:
                last = state.rounds[-1]
                joined = msgspec.structs.replace(last, call_ids=(*last.call_ids, call_id))
                rounds = (*state.rounds[:-1], joined)
            else:
                rounds = (*state.rounds, Round(call_ids=(call_id,)))
            return msgspec.structs.replace(
                state,
                calls=evolve_calls(state.calls, event),
                rounds=rounds,
                round_open=True,
                model_failures=0,
                model_not_before=None,
            )
        case ToolStarted(call_id=call_id, attempt=attempt, idempotent=idempotent):
            started = Started(call_id=call_id, at=event.at, attempt=attempt, idempotent=idempotent)
            others = tuple(s for s in state.started if s.call_id != call_id)
            return msgspec.structs.replace(state, started=(*others, started))
        case ToolDeferred(call_id=call_id, retry_after_s=retry_after_s):
            not_before = format_time(parse_time(event.at) + timedelta(seconds=retry_after_s))
            return _with_attempt(state, call_id, open=False, not_before=not_before)
        case ToolCompleted(call_id=call_id):
            state = _with_attempt(state, call_id, open=False)
            return msgspec.structs.replace(state, calls=evolve_calls(state.calls, event))
        case ApprovalRequested() | ApprovalResolved():
            return msgspec.structs.replace(state, calls=evolve_calls(state.calls, event))
        case RunCompleted(usage=usage, output=output):
            return msgspec.structs.replace(
                state, status="completed", ended_at=event.at, usage=usage, output=output
            )
        case RunFailed(error=error, usage=usage):
            return msgspec.structs.replace(
                state, status="failed", ended_at=event.at, error=error, usage=usage or Usage()
            )
        case RunCancelled(by=by, usage=usage):
            return msgspec.structs.replace(
                state,
                status="cancelled",
                ended_at=event.at,
                cancelled_by=by,
                usage=usage or Usage(),
            )
    return state


def _with_attempt(state: RunState, call_id: str, **changes: object) -> RunState:
    if not any(s.call_id == call_id for s in state.started):
        return state
    started = tuple(
        msgspec.structs.replace(s, **changes) if s.call_id == call_id else s for s in state.started
    )
    return msgspec.structs.replace(state, started=started)


def _with_message(
    state: RunState, message_id: str, work_item_id: str | None, text: str, *, completed: bool
) -> RunState:
    for index, message in enumerate(state.messages):
        if message.message_id == message_id:
            updated = msgspec.structs.replace(message, text=message.text + text)
            messages = (*state.messages[:index], updated, *state.messages[index + 1 :])
            return msgspec.structs.replace(state, messages=messages)
    new = Message(message_id=message_id, work_item_id=work_item_id, text=text, completed=completed)
    return msgspec.structs.replace(state, messages=(*state.messages, new))
