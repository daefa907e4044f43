"""Thread decisions: a client's commands, and what runs decide about their thread."""

from __future__ import annotations

from collections.abc import Sequence

from nome_core.bus import Aggregate
from nome_core.events import Client, DomainEvent
from nome_core.threads.commands import (
    AddMessage,
    CreateThread,
    DeleteThread,
    RenameThread,
    ThreadCommand,
)
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
from nome_core.threads.state import ThreadState, evolve


def live(state: ThreadState | None) -> ThreadState:
    """The thread, if it exists (for this tenant: the bus hides others') and is not deleted."""
    if state is None or state.deleted:
        raise ThreadNotFound()
    return state


def decide(cmd: ThreadCommand, state: ThreadState | None) -> list[DomainEvent]:
    match cmd:
        case CreateThread(title=title, metadata=metadata, history=history, client=client):
            return [
                ThreadCreated(title=title, metadata=metadata),
                *(
                    MessageAdded(
                        message_id=m.message_id, role=m.role, content=m.content, client=client
                    )
                    for m in history
                ),
            ]
        case RenameThread(title=title):
            return [] if live(state).title == title else [ThreadRenamed(title=title)]
        case DeleteThread():
            live(state)
            return [ThreadDeleted()]
        case AddMessage() as add:
            live(state)
            return [
                MessageAdded(
                    message_id=add.message_id,
                    role=add.role,
                    content=add.content,
                    client=add.client,
                    attributes=add.attributes,
                )
            ]


THREADS: Aggregate[ThreadState, ThreadCommand] = Aggregate(
    evolve=evolve,
    decide=decide,
    stream_of=lambda cmd: cmd.thread_id,
    creates=lambda cmd: isinstance(cmd, CreateThread),
    thread_of=lambda cmd: cmd.thread_id,
)


# -- what runs decide about their thread --------------------------------------------------


def run_message(
    *,
    message_id: str,
    role: str,
    content: str,
    run_id: str,
    client: Client | None,
    domain_hints: Sequence[str],
    tier: str,
    tools_invoked: Sequence[str],
) -> MessageAdded:
    """A message a run adds to its thread (its input, its answer), labelled with the run."""
    return MessageAdded(
        message_id=message_id,
        role=role,
        content=content,
        client=client,
        domain_hints=list(domain_hints),
        tier=tier,
        tools_invoked=list(tools_invoked),
        episode_id=run_id,
    )


def admit_run(state: ThreadState | None, run_id: str, *, enqueue: bool) -> list[DomainEvent]:
    """Admit a run as the thread's active run, or queue it behind the active one."""
    thread = live(state)
    if thread.active_run_id is None:
        return [RunAdmitted(run_id=run_id, slotted=True)]
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
            events.append(RunAdmitted(run_id=waiting[0], slotted=True))
    return events
