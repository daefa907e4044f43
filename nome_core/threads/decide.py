"""Thread commands: validate against the state, answer with events."""

from __future__ import annotations

from nome_core.eventstore import Client, DomainEvent
from nome_core.threads.errors import RunInProgress, ThreadNotFound
from nome_core.threads.events import (
    MessageAdded,
    RunAdmitted,
    RunQueued,
    RunReleased,
    ThreadCreated,
    ThreadDeleted,
    ThreadRenamed,
)
from nome_core.threads.state import ThreadState


def live(state: ThreadState | None, tenant_id: str) -> ThreadState:
    """The thread, if it exists for this tenant and is not deleted."""
    if state is None or state.deleted or state.tenant_id != tenant_id:
        raise ThreadNotFound()
    return state


def create(title: str, metadata: dict[str, str]) -> list[DomainEvent]:
    return [ThreadCreated(title=title, metadata=metadata)]


def rename(state: ThreadState | None, tenant_id: str, title: str) -> list[DomainEvent]:
    if live(state, tenant_id).title == title:
        return []
    return [ThreadRenamed(title=title)]


def delete(state: ThreadState | None, tenant_id: str) -> list[DomainEvent]:
    live(state, tenant_id)
    return [ThreadDeleted()]


def add_message(
    state: ThreadState | None,
    tenant_id: str,
    *,
    message_id: str,
    role: str,
    content: str,
    client: Client | None = None,
    attributes: dict[str, str] | None = None,
    domain_hints: list[str] | None = None,
    tier: str | None = None,
    tools_invoked: list[str] | None = None,
    episode_id: str | None = None,
) -> list[DomainEvent]:
    live(state, tenant_id)
    return [
        MessageAdded(
            message_id=message_id,
            role=role,
            content=content,
            client=client,
            attributes=attributes or {},
            domain_hints=domain_hints or [],
            tier=tier,
            tools_invoked=tools_invoked or [],
            episode_id=episode_id,
        )
    ]


def start_run(
    state: ThreadState | None, tenant_id: str, run_id: str, *, enqueue: bool
) -> list[DomainEvent]:
    """Admit a run as the thread's active run, or queue it behind the active one."""
    thread = live(state, tenant_id)
    if thread.active_run_id is None:
        return [RunAdmitted(run_id=run_id)]
    if not enqueue:
        raise RunInProgress(thread.active_run_id)
    return [RunQueued(run_id=run_id)]


def release_run(state: ThreadState | None, run_id: str) -> list[DomainEvent]:
    """A run ended: free the thread and admit the next queued run. Works on deleted threads
    too: queued runs of a deleted thread are admitted so the worker can cancel them."""
    if state is None or (state.active_run_id != run_id and run_id not in state.queued_run_ids):
        return []
    events: list[DomainEvent] = [RunReleased(run_id=run_id)]
    if state.active_run_id == run_id:
        waiting = [r for r in state.queued_run_ids if r != run_id]
        if waiting:
            events.append(RunAdmitted(run_id=waiting[0]))
    return events
