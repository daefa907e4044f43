"""Run events: every step of an agent answering, in the run's own stream (API.md §3)."""

from __future__ import annotations

import msgspec

from nome_core.events import Client, DomainEvent, event_type


class AgentSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's configuration when the run was created; later edits do not change a run."""

    provider: str
    model: str
    instructions: str
    tools: list[str]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


@event_type("run.created")
class RunCreated(DomainEvent, frozen=True, kw_only=True):
    input: str
    agent_id: str
    tier: str
    domain_hints: list[str]
    client: Client
    agent: AgentSnapshot
    creator_roles: list[str] = []


@event_type("run.started")
class RunStarted(DomainEvent, frozen=True, kw_only=True):
    model: str


@event_type("message.delta")
class MessageDelta(DomainEvent, frozen=True, kw_only=True):
    message_id: str
    text: str


@event_type("message.completed")
class MessageCompleted(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    message_id: str
    role: str
    content: str
    # Closed by a worker that took the run over mid-turn from a model that cannot say the
    # same again; the answer goes on in a new message. Absent (false) otherwise.
    interrupted: bool = False


@event_type("run.completed")
class RunCompleted(DomainEvent, frozen=True, kw_only=True):
    usage: Usage
    output: str


@event_type("run.failed")
class RunFailed(DomainEvent, frozen=True, kw_only=True):
    error: ErrorInfo


@event_type("run.cancelled")
class RunCancelled(DomainEvent, frozen=True, kw_only=True):
    by: str | None
    reason: str | None


# The events that end a run, one of each run.
TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)
TERMINAL_TYPES = frozenset(e.type for e in TERMINAL_EVENTS)
