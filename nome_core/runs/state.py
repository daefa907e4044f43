"""Run state folded from the run's log. The worker, /state?at=, verify and the API all use it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.eventstore import Client, Event
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    PolicyDecision,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    ToolCalled,
    ToolCompleted,
    Usage,
)
from nome_core.tools.receipts import ToolReceipt

Status = Literal["pending", "active", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of the run and, once done, its receipt."""

    call_id: str
    work_item_id: str | None
    tool: str
    arguments: Any
    policy: PolicyDecision
    receipt: ToolReceipt | None = None
    approval_id: str | None = None
    approval_tier: str | None = None
    approval_status: str | None = None  # pending, approved, denied, expired
    approval_expires_at: str | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A message the run is writing or has written."""

    message_id: str
    work_item_id: str | None
    text: str = ""
    completed: bool = False


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
    status: Status = "pending"
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

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def awaiting_approval(self) -> bool:
        return any(c.approval_status == "pending" for c in self.calls)

    def call(self, call_id: str) -> Call | None:
        return next((c for c in self.calls if c.call_id == call_id), None)


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
    state = msgspec.structs.replace(state, event_count=state.event_count + 1)
    match event.data:
        case RunStarted(model=model):
            return msgspec.structs.replace(state, status="active", started_at=event.at, model=model)
        case MessageDelta(message_id=message_id, text=text):
            return _with_message(state, message_id, event.work_item_id, text, completed=False)
        case MessageCompleted(message_id=message_id, content=content):
            # The completed content is authoritative (deltas concatenate to it).
            messages = tuple(m for m in state.messages if m.message_id != message_id)
            done = Message(
                message_id=message_id, work_item_id=event.work_item_id, text=content, completed=True
            )
            return msgspec.structs.replace(state, messages=(*messages, done))
        case ToolCalled() | ApprovalRequested() | ApprovalResolved() | ToolCompleted():
            return msgspec.structs.replace(state, calls=evolve_calls(state.calls, event))
        case RunCompleted(usage=usage, output=output):
            return msgspec.structs.replace(
                state, status="completed", ended_at=event.at, usage=usage, output=output
            )
        case RunFailed(error=error):
            return msgspec.structs.replace(state, status="failed", ended_at=event.at, error=error)
        case RunCancelled(by=by):
            return msgspec.structs.replace(
                state, status="cancelled", ended_at=event.at, cancelled_by=by
            )
    return state


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


def _with_call(calls: tuple[Call, ...], call_id: str, **changes: Any) -> tuple[Call, ...]:
    return tuple(
        msgspec.structs.replace(c, **changes) if c.call_id == call_id else c for c in calls
    )


def evolve_calls(calls: tuple[Call, ...], event: Event) -> tuple[Call, ...]:
    """Tool calls and their approvals, as runs and direct calls both record them."""
    match event.data:
        case ToolCalled() as called:
            call = Call(
                call_id=called.call_id,
                work_item_id=event.work_item_id,
                tool=called.tool,
                arguments=called.arguments,
                policy=called.policy,
            )
            return (*calls, call)
        case ApprovalRequested() as requested:
            return _with_call(
                calls,
                requested.call_id,
                approval_id=requested.approval_id,
                approval_tier=requested.tier,
                approval_status="pending",
                approval_expires_at=requested.expires_at,
            )
        case ApprovalResolved(approval_id=approval_id, decision=decision):
            waiting = next((c for c in calls if c.approval_id == approval_id), None)
            if waiting is None:
                return calls
            return _with_call(calls, waiting.call_id, approval_status=decision)
        case ToolCompleted(call_id=call_id, receipt=receipt):
            return _with_call(calls, call_id, receipt=receipt)
    return calls
