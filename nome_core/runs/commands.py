"""Run commands: created by clients, stepped by workers, cancelled by operators."""

from __future__ import annotations

from collections.abc import Sequence

from nome_core.bus import Command
from nome_core.events import Client, Decided
from nome_core.runs.events import AgentSnapshot


class StartRun(Command, frozen=True, kw_only=True):
    """A run as a client asks for it: of the agent named, or of the tenant's default agent,
    at the agent's tier unless one is given."""

    run_id: str
    thread_id: str
    input: str
    agent_id: str | None
    tier: str | None
    domain_hints: list[str]
    enqueue: bool
    creator_roles: list[str]
    client: Client
    # Make the thread (`thread_id`) with this title in the same commit (a chat without one).
    new_thread: str | None = None


class CreateRun(Command, frozen=True, kw_only=True):
    run_id: str
    thread_id: str
    input: str
    agent_id: str
    agent: AgentSnapshot
    tier: str
    domain_hints: list[str]
    # Wait behind the thread's active run instead of refusing (`if_busy: enqueue`).
    enqueue: bool
    # Who started it: the policy's `allowed_roles` rule decides the run's calls on these.
    creator_roles: list[str]
    client: Client
    new_thread: str | None = None


class RecordStep(Command, frozen=True, kw_only=True):
    """A worker's step, decided on the run as the worker last saw it (`seen`: its event
    count); refused if the run moved on since (a cancel, or another worker)."""

    run_id: str
    thread_id: str
    seen: int
    drafts: Sequence[Decided]


class CancelRun(Command, frozen=True, kw_only=True):
    run_id: str
    by: str | None
    reason: str | None
