"""Thread (conversation) events. Messages are events of their thread's stream."""

from __future__ import annotations

from nome_core.events import Client, DomainEvent, event_type


@event_type("thread.created")
class ThreadCreated(DomainEvent, frozen=True, kw_only=True):
    title: str
    metadata: dict[str, str]


@event_type("thread.renamed")
class ThreadRenamed(DomainEvent, frozen=True, kw_only=True):
    title: str


@event_type("thread.deleted")
class ThreadDeleted(DomainEvent, frozen=True, kw_only=True):
    pass


@event_type("thread.message_added")
class MessageAdded(DomainEvent, frozen=True, kw_only=True):
    message_id: str
    role: str
    content: str
    domain_hints: list[str] = []
    tier: str | None = None
    tools_invoked: list[str] = []
    episode_id: str | None = None
    client: Client | None = None
    # Caller-supplied string labels, kept apart from the keys NOME itself sets.
    attributes: dict[str, str] = {}


@event_type("thread.run_admitted")
class RunAdmitted(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    """The run is the thread's active run now (one at a time per thread)."""

    run_id: str
    # It starts once it holds one of the tenant's run slots (`slots.taken`, decided in the
    # same commit when one is free). Absent (false): admitted before the tenant-wide queue
    # existed, so it may start at once.
    slotted: bool = False


@event_type("thread.run_queued")
class RunQueued(DomainEvent, frozen=True, kw_only=True):
    """The run waits for the thread's active run to end (`if_busy: enqueue`)."""

    run_id: str


@event_type("thread.run_released")
class RunReleased(DomainEvent, frozen=True, kw_only=True):
    """The run ended; the thread is free for the next one."""

    run_id: str
