"""Agent commands."""

from __future__ import annotations

import asyncio
from typing import Any

from nome_core.agents import decide as agents_decide
from nome_core.agents import state as agents_state
from nome_core.commands import Actor, CommandBus, Outcome
from nome_core.runs import scripted as runs_scripted
from nome_core.tools.builtin import BUILTIN_TOOLS


class AgentCommands(CommandBus):
    """Agents, and the default agent a run falls back to."""

    async def create_agent(
        self, actor: Actor, *, agent_id: str | None = None, **config: Any
    ) -> Outcome[agents_state.AgentState | None]:
        """A new agent; with the tenant's default agent id, made at most once."""
        return await self.execute(
            agent_id or self.clock.new_id(),
            agents_state.evolve,
            lambda state: agents_decide.create(state, **config),
            actor,
            new=agent_id is None,
        )

    async def update_agent(
        self, actor: Actor, agent_id: str, **changes: Any
    ) -> Outcome[agents_state.AgentState | None]:
        return await self.execute(
            agent_id,
            agents_state.evolve,
            lambda state: agents_decide.update(state, actor.tenant_id, **changes),
            actor,
        )

    async def delete_agent(
        self, actor: Actor, agent_id: str
    ) -> Outcome[agents_state.AgentState | None]:
        return await self.execute(
            agent_id,
            agents_state.evolve,
            lambda state: agents_decide.delete(state, actor.tenant_id),
            actor,
        )

    def agent(self, agent_id: str) -> agents_state.AgentState | None:
        return self.load(agent_id, agents_state.evolve).state

    async def agent_for_run(
        self, actor: Actor, agent_id: str | None, default_provider: str
    ) -> agents_state.AgentState:
        """The run's agent: the one named, or the tenant's default (made on first use)."""
        if agent_id is not None:
            named = await asyncio.to_thread(self.agent, agent_id)
            return agents_decide.live(named, actor.tenant_id)
        default_id = agents_state.default_agent_id(actor.tenant_id)
        agent = await asyncio.to_thread(self.agent, default_id)
        if agent is None:
            outcome = await self.create_agent(
                actor,
                agent_id=default_id,
                name="default",
                instructions="You are a helpful assistant.",
                provider=default_provider,
                model=runs_scripted.MODEL if default_provider == "scripted" else "",
                tools=sorted(BUILTIN_TOOLS),
                tier="standard",
            )
            agent = outcome.state
        return agents_decide.live(agent, actor.tenant_id)
