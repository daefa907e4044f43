"""Run events: every step of an agent answering, in the run's own stream (API.md §3)."""

from __future__ import annotations

import msgspec

from nome_core.events import Client, DomainEvent, event_type


class AgentSnapshot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The agent's configuration when the run was created; later edits do not change a run."""

    provider: str
    model: str
    instructions: str
    tools: list[str]
    # The agent's budget for the conversation sent to the model (None: the default).
    context_tokens: int | None = None


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


# The harness that starts a run now (see RunStarted.harness).
HARNESS = 2


@event_type("run.started")
class RunStarted(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    # Which harness drives the run, so `verify` replays it with the same rules: 1 (absent)
    # ran tools without `tool.started` and failed a run at its model's first error; 2 fences
    # every tool call with `tool.started`, retries a failing model and discards what a
    # failed attempt had said.
    harness: int = 1
    # The thread's seq when the run started: the history the model is sent is the thread up
    # to here (and the runs that had ended by then), so it can be rebuilt from the log.
    thread_seq: int | None = None


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


@event_type("message.discarded")
class MessageDiscarded(DomainEvent, frozen=True, kw_only=True):
    """A half-streamed message is dropped: its model attempt failed. Its deltas are not part
    of the answer, which the next attempt (if any) says afresh in a new message."""

    message_id: str
    reason: str


@event_type("model.retry_scheduled")
class ModelRetryScheduled(DomainEvent, frozen=True, kw_only=True):
    """A model turn failed with an error worth retrying; the turn is asked again once
    `retry_after_s` has passed. `attempt` counts the turn's failed attempts so far."""

    attempt: int
    error: ErrorInfo
    retry_after_s: float


@event_type("run.completed")
class RunCompleted(DomainEvent, frozen=True, kw_only=True):
    usage: Usage
    output: str


@event_type("run.failed")
class RunFailed(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    error: ErrorInfo
    # What the run used before it failed, and so cost (absent: it never started, or it
    # ended before runs were charged at their end).
    usage: Usage | None = None


@event_type("run.cancelled")
class RunCancelled(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    by: str | None
    reason: str | None
    # As for run.failed: a run cancelled before it started costs nothing.
    usage: Usage | None = None


# The events that end a run, one of each run.
TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)
TERMINAL_TYPES = frozenset(e.type for e in TERMINAL_EVENTS)
