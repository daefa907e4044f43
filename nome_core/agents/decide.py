"""Agent commands."""

from __future__ import annotations

from typing import Any

from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.agents.state import AgentState
from nome_core.errors import Invalid, NotFound
from nome_core.eventstore import DomainEvent

PROVIDERS = ("scripted", "openai")
TIERS = ("fast", "standard", "deep")


class AgentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such agent")


def live(state: AgentState | None, tenant_id: str) -> AgentState:
    if state is None or state.deleted or state.tenant_id != tenant_id:
        raise AgentNotFound()
    return state


def _check(provider: str, tier: str) -> None:
    if provider not in PROVIDERS:
        raise Invalid(f"provider must be one of {', '.join(PROVIDERS)}")
    if tier not in TIERS:
        raise Invalid(f"tier must be one of {', '.join(TIERS)}")


def create(state: AgentState | None, **config: Any) -> list[DomainEvent]:
    if state is not None:
        return []  # the default agent: made once, whoever gets there first
    _check(config["provider"], config["tier"])
    return [AgentCreated(**config)]


def update(state: AgentState | None, tenant_id: str, **changes: Any) -> list[DomainEvent]:
    current = live(state, tenant_id)
    merged: dict[str, Any] = {
        "name": current.name,
        "instructions": current.instructions,
        "provider": current.provider,
        "model": current.model,
        "tools": current.tools,
        "tier": current.tier,
    }
    merged.update({k: v for k, v in changes.items() if v is not None})
    _check(merged["provider"], merged["tier"])
    return [AgentUpdated(**merged)]


def delete(state: AgentState | None, tenant_id: str) -> list[DomainEvent]:
    live(state, tenant_id)
    return [AgentDeleted()]
