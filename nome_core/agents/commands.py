"""Agent commands."""

from __future__ import annotations

from nome_core.bus import Command
from nome_core.values import Provider, Tier


class CreateAgent(Command, frozen=True, kw_only=True):
    agent_id: str
    name: str
    instructions: str
    provider: Provider
    model: str
    tools: list[str]
    tier: Tier
    context_tokens: int | None = None


class UpdateAgent(Command, frozen=True, kw_only=True):
    """Changes to an agent; a field left None keeps its value."""

    agent_id: str
    name: str | None = None
    instructions: str | None = None
    provider: Provider | None = None
    model: str | None = None
    tools: list[str] | None = None
    tier: Tier | None = None
    context_tokens: int | None = None


class DeleteAgent(Command, frozen=True, kw_only=True):
    agent_id: str


class EnsureDefaultAgent(Command, frozen=True, kw_only=True):
    """The tenant's default agent (a fixed id), made by whoever needs it first."""

    agent_id: str
    provider: Provider
    model: str
    tools: list[str]


AgentCommand = CreateAgent | UpdateAgent | DeleteAgent | EnsureDefaultAgent
