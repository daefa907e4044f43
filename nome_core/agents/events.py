"""Agent events: an agent is a named configuration a run snapshots when it is created."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("agent.created")
class AgentCreated(DomainEvent, frozen=True, kw_only=True):
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str


@event_type("agent.updated")
class AgentUpdated(DomainEvent, frozen=True, kw_only=True):
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str


@event_type("agent.deleted")
class AgentDeleted(DomainEvent, frozen=True, kw_only=True):
    pass
