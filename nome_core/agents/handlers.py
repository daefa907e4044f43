"""Agent use cases beyond one command: the agent a run uses."""

from __future__ import annotations

import asyncio

import msgspec

from nome_core.agents.commands import AgentCommand, EnsureDefaultAgent
from nome_core.agents.decide import AGENTS, live
from nome_core.agents.state import AgentState, default_agent_id, evolve
from nome_core.bus import Actor, CommandBus, Handlers
from nome_core.events import unrecorded
from nome_core.tools.builtin import BUILTIN_TOOLS
from nome_core.values import SCRIPTED_MODEL, Provider


class AgentHandlers(Handlers[AgentState, AgentCommand]):
    def __init__(self, bus: CommandBus, default_provider: Provider) -> None:
        super().__init__(bus, AGENTS)
        self.default_provider = default_provider

    async def for_run(
        self, actor: Actor, agent_id: str | None
    ) -> tuple[AgentState, EnsureDefaultAgent | None]:
        """The run's agent: the one named, or the tenant's default. A default not made yet
        comes with the command that makes it, for the run's own commit (a run refused
        leaves no agent behind)."""
        if agent_id is not None:
            return live(await asyncio.to_thread(self.get, actor.tenant_id, agent_id)), None
        default_id = default_agent_id(actor.tenant_id)
        agent = await asyncio.to_thread(self.get, actor.tenant_id, default_id)
        if agent is not None:
            return live(agent), None
        ensure = EnsureDefaultAgent(
            agent_id=default_id,
            provider=self.default_provider,
            model=SCRIPTED_MODEL if self.default_provider == "scripted" else "",
            tools=sorted(BUILTIN_TOOLS),
        )
        made: AgentState | None = None
        for event in AGENTS.decide(ensure, None):
            made = evolve(made, unrecorded(event))
        assert made is not None
        return msgspec.structs.replace(made, id=default_id, tenant_id=actor.tenant_id), ensure
