"""Thread state folded from its events: just what commands on a thread must check."""

from __future__ import annotations

import msgspec

from nome_core.events import Event
from nome_core.threads.events import (
    MessageAdded,
    RunAdmitted,
    RunQueued,
    RunReleased,
    ThreadCreated,
    ThreadDeleted,
    ThreadRenamed,
)


class ThreadState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    title: str
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    message_count: int = 0
    deleted: bool = False
    last_run_id: str | None = None
    active_run_id: str | None = None
    queued_run_ids: tuple[str, ...] = ()
    # The seq of the thread's last event: a run records it when it starts, so the history
    # its model is sent is the thread up to there.
    seq: int = 0


def evolve(state: ThreadState | None, event: Event) -> ThreadState | None:
    folded = _evolve(state, event)
    # An event folded before it is sealed (`unrecorded`) has no seq yet.
    if folded is not None and event.seq and folded.seq != event.seq:
        return msgspec.structs.replace(folded, seq=event.seq)
    return folded


def _evolve(state: ThreadState | None, event: Event) -> ThreadState | None:
    match event.data:
        case ThreadCreated(title=title, metadata=metadata):
            return ThreadState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                title=title,
                metadata=metadata,
                created_at=event.at,
                updated_at=event.at,
            )
        case ThreadRenamed(title=title) if state is not None:
            return msgspec.structs.replace(state, title=title, updated_at=event.at)
        case ThreadDeleted() if state is not None:
            return msgspec.structs.replace(state, deleted=True, updated_at=event.at)
        case MessageAdded() if state is not None:
            return msgspec.structs.replace(
                state, message_count=state.message_count + 1, updated_at=event.at
            )
        case RunAdmitted(run_id=run_id) if state is not None:
            return msgspec.structs.replace(
                state,
                active_run_id=run_id,
                last_run_id=run_id,
                queued_run_ids=tuple(r for r in state.queued_run_ids if r != run_id),
                updated_at=event.at,
            )
        case RunQueued(run_id=run_id) if state is not None:
            return msgspec.structs.replace(
                state, queued_run_ids=(*state.queued_run_ids, run_id), updated_at=event.at
            )
        case RunReleased(run_id=run_id) if state is not None:
            return msgspec.structs.replace(
                state,
                active_run_id=None if state.active_run_id == run_id else state.active_run_id,
                queued_run_ids=tuple(r for r in state.queued_run_ids if r != run_id),
                updated_at=event.at,
            )
    return state
