"""The harness's tools port for live runs: the tenant's policy matrix decides each call on
the run's creator and agent, and the call runs through its source's executor."""

from __future__ import annotations

from nome_core.runs.state import RunState
from nome_core.tools.events import PolicyDecision
from nome_core.tools.executor import CallContext
from nome_core.tools.handlers import ToolHandlers
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call


class RunTools:
    def __init__(self, tools: ToolHandlers) -> None:
        self.tools = tools

    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision:
        return await self.tools.decide(
            state.tenant_id,
            tool,
            calls_so_far=calls_so_far,
            roles=state.creator_roles,
            agent_tools=state.agent.tools,
        )

    async def execute(self, state: RunState, call: Call) -> ToolReceipt:
        context = CallContext(tenant_id=state.tenant_id, run_id=state.id, thread_id=state.thread_id)
        return await self.tools.execute(call, context)
