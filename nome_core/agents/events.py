"""Agent events: an agent is a named configuration a run snapshots when it is created."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("agent.created")
class AgentCreated(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str
    # The budget, in tokens, of the conversation its runs send the model (None: the
    # default, DEFAULT_CONTEXT_TOKENS).
    context_tokens: int | None = None


@event_type("agent.updated")
class AgentUpdated(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str
    # The budget, in tokens, of the conversation its runs send the model (None: the
    # default, DEFAULT_CONTEXT_TOKENS).
    context_tokens: int | None = None


@event_type("agent.deleted")
class AgentDeleted(DomainEvent, frozen=True, kw_only=True):
    pass
