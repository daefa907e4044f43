"""Run state folded from the run's log. The worker, /state?at=, verify and the API all use it."""

from __future__ import annotations

from typing import Final, Literal, get_args

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.approvals.state import evolve_calls
from nome_core.events import Client, Event
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.tools.events import ToolCalled, ToolCompleted
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
