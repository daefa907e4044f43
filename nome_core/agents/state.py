"""Agent state folded from its events."""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.events import Event

_DEFAULT_AGENT = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650002")
# What an agent's runs may send the model, in tokens (counted as words), unless it says.
DEFAULT_CONTEXT_TOKENS: Final = 8000


def default_agent_id(tenant_id: str) -> str:
    """Each tenant's default agent has a fixed id, so it is made at most once."""
    return str(uuid.uuid5(_DEFAULT_AGENT, tenant_id))


class AgentState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str
    created_at: str
    updated_at: str
    deleted: bool = False
    context_tokens: int | None = None


def evolve(state: AgentState | None, event: Event) -> AgentState | None:
    match event.data:
        case AgentCreated() as c:
            return AgentState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                name=c.name,
                instructions=c.instructions,
                provider=c.provider,
                model=c.model,
                tools=c.tools,
                tier=c.tier,
                created_at=event.at,
                updated_at=event.at,
                context_tokens=c.context_tokens,
            )
        case AgentUpdated() as u if state is not None:
            return msgspec.structs.replace(
                state,
                name=u.name,
                instructions=u.instructions,
                provider=u.provider,
                model=u.model,
                tools=u.tools,
                tier=u.tier,
                updated_at=event.at,
                context_tokens=u.context_tokens,
            )
        case AgentDeleted() if state is not None:
            return msgspec.structs.replace(state, deleted=True, updated_at=event.at)
    return state
