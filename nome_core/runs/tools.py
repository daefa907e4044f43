"""The harness's tools port for live runs: the tenant's policy matrix decides each call on
the run's creator and agent, and the call runs through its source's executor."""

from __future__ import annotations

from nome_core.runs.state import RunState, Started
from nome_core.tools.events import PolicyDecision
from nome_core.tools.executor import CallContext, unfinished_receipt
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

    async def idempotent(self, state: RunState, call: Call) -> bool:
        if call.policy.decision == "deny":
            return True  # it never reaches its tool
        spec = await self.tools.registry.get(state.tenant_id, call.tool)
        # A tool uninstalled since is not run either: its receipt says so.
        return spec is None or spec.idempotent

    async def unfinished(self, state: RunState, call: Call, attempt: Started) -> ToolReceipt:
        clock = self.tools.bus.clock
        return unfinished_receipt(
            call,
            receipt_id=clock.new_id(),
            run_id=state.id,
            started_at=attempt.at,
            now=clock.now(),
        )
