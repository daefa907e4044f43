"""Tool use cases shared by runs and direct calls: decide one call under the tenant's policy
matrix, and execute it through the executor of its source."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from nome_core.bus import CommandBus, Handlers
from nome_core.tools.builtin import ToolSpec
from nome_core.tools.commands import ToolCommand
from nome_core.tools.decide import POLICIES
from nome_core.tools.events import PolicyDecision
from nome_core.tools.executor import CallContext, Executor, execute
from nome_core.tools.policy import Policy, decide_call, default_policy
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.registry import ToolRegistry
from nome_core.tools.state import Call, policy_stream_id


class ToolHandlers(Handlers[Policy, ToolCommand]):
    def __init__(self, bus: CommandBus, registry: ToolRegistry, executor: Executor) -> None:
        super().__init__(bus, POLICIES)
        self.registry = registry
        self.executor = executor

    def policy(self, tenant_id: str, spec: ToolSpec) -> Policy:
        """The tool's effective policy for the tenant: its latest change, or the default."""
        changed = self.bus.load(policy_stream_id(tenant_id, spec.name), POLICIES.evolve)
        return changed or default_policy(spec.name, dangerous=spec.dangerous)

    async def policies(self, tenant_id: str, specs: Collection[ToolSpec]) -> list[Policy]:
        return list(
            await asyncio.gather(
                *(asyncio.to_thread(self.policy, tenant_id, spec) for spec in specs)
            )
        )

    async def decide(
        self,
        tenant_id: str,
        tool: str,
        *,
        calls_so_far: int,
        roles: Collection[str],
        agent_tools: Collection[str] | None = None,
    ) -> PolicyDecision:
        """What the policy matrix says of one call of `tool` now."""
        spec = await self.registry.get(tenant_id, tool)
        policy = await asyncio.to_thread(self.policy, tenant_id, spec) if spec else None
        return decide_call(policy, calls_so_far=calls_so_far, roles=roles, agent_tools=agent_tools)

    async def execute(self, call: Call, context: CallContext) -> ToolReceipt:
        """Run a decided call and write its receipt (raises ToolQueued under `offline:
        queue` while its backend is unreachable)."""
        spec = await self.registry.get(context.tenant_id, call.tool)
        policy = (
            await asyncio.to_thread(self.policy, context.tenant_id, spec)
            if spec
            else default_policy(call.tool)
        )
        return await execute(
            call,
            spec=spec,
            policy=policy,
            context=context,
            executor=self.executor,
            clock=self.bus.clock,
        )
