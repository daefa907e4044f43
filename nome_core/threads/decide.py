"""Thread commands: validate against the state, answer with events."""

from __future__ import annotations

from nome_core.eventstore import Client, DomainEvent
from nome_core.threads.errors import ThreadNotFound
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadDeleted, ThreadRenamed
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
