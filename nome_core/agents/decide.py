"""Agent decisions."""

from __future__ import annotations

from nome_core.agents.commands import (
    AgentCommand,
    CreateAgent,
    DeleteAgent,
    EnsureDefaultAgent,
    UpdateAgent,
)
from nome_core.agents.errors import AgentNotFound, DefaultAgentKept
from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.agents.state import AgentState, default_agent_id, evolve
from nome_core.bus import Aggregate
from nome_core.events import DomainEvent

DEFAULT_INSTRUCTIONS = "You are a helpful assistant."


def live(state: AgentState | None) -> AgentState:
    if state is None or state.deleted:
        raise AgentNotFound()
    return state


def decide(cmd: AgentCommand, state: AgentState | None) -> list[DomainEvent]:
    match cmd:
        case CreateAgent() as c:
            return [
                AgentCreated(
                    name=c.name,
                    instructions=c.instructions,
                    provider=c.provider,
                    model=c.model,
                    tools=c.tools,
                    tier=c.tier,
                    context_tokens=c.context_tokens,
                )
            ]
        case EnsureDefaultAgent() as c:
            if state is not None:
                return []  # made once, whoever gets there first
            return [
                AgentCreated(
                    name="default",
                    instructions=DEFAULT_INSTRUCTIONS,
                    provider=c.provider,
                    model=c.model,
                    tools=c.tools,
                    tier="standard",
                )
            ]
        case UpdateAgent() as u:
            current = live(state)
            return [
                AgentUpdated(
                    name=current.name if u.name is None else u.name,
                    instructions=current.instructions if u.instructions is None else u.instructions,
                    provider=current.provider if u.provider is None else u.provider,
                    model=current.model if u.model is None else u.model,
                    tools=current.tools if u.tools is None else u.tools,
                    tier=current.tier if u.tier is None else u.tier,
                    context_tokens=(
                        current.context_tokens if u.context_tokens is None else u.context_tokens
                    ),
                )
            ]
        case DeleteAgent():
            agent = live(state)
            if agent.id == default_agent_id(agent.tenant_id):
                raise DefaultAgentKept()
            return [AgentDeleted()]


AGENTS: Aggregate[AgentState, AgentCommand] = Aggregate(
    evolve=evolve,
    decide=decide,
    stream_of=lambda cmd: cmd.agent_id,
    creates=lambda cmd: isinstance(cmd, CreateAgent),
)
