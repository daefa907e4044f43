"""Agent use cases beyond one command: the agent a run uses."""

from __future__ import annotations

import asyncio

from nome_core.agents.commands import AgentCommand, EnsureDefaultAgent
from nome_core.agents.decide import AGENTS, live
from nome_core.agents.state import AgentState, default_agent_id
from nome_core.bus import Actor, CommandBus, Handlers
from nome_core.tools.builtin import BUILTIN_TOOLS
from nome_core.values import SCRIPTED_MODEL, Provider


class AgentHandlers(Handlers[AgentState, AgentCommand]):
    def __init__(self, bus: CommandBus, default_provider: Provider) -> None:
        super().__init__(bus, AGENTS)
        self.default_provider = default_provider

    async def for_run(self, actor: Actor, agent_id: str | None) -> AgentState:
        """The run's agent: the one named, or the tenant's default (made on first use)."""
        if agent_id is not None:
            return live(await asyncio.to_thread(self.get, actor.tenant_id, agent_id))
        default_id = default_agent_id(actor.tenant_id)
        agent = await asyncio.to_thread(self.get, actor.tenant_id, default_id)
        if agent is None:
            made = await self.handle(
                actor,
                EnsureDefaultAgent(
                    agent_id=default_id,
                    provider=self.default_provider,
                    model=SCRIPTED_MODEL if self.default_provider == "scripted" else "",
                    tools=sorted(BUILTIN_TOOLS),
                ),
            )
            agent = made.state
        return live(agent)
