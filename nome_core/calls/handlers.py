"""Direct tool calls: decide under the caller's roles, run it now (or once approved), record
the call with its receipt. The MCP server's `tools/call` is this use case too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from nome_core.approvals import decide as approvals
from nome_core.approvals.commands import ResolveApproval
from nome_core.bus import Actor, Claim, CommandBus, Outcome, Spec, owned_by
from nome_core.calls.commands import CallTool
from nome_core.calls.state import DirectCall, evolve
from nome_core.errors import Invalid, NotFound
from nome_core.events import Decided, Draft, payload, unrecorded
from nome_core.threads import state as threads
from nome_core.threads.decide import live as live_thread
from nome_core.tools.builtin import check_arguments
from nome_core.tools.events import ToolCalled, ToolCompleted
from nome_core.tools.executor import CallContext, ToolQueued
from nome_core.tools.handlers import ToolHandlers
from nome_core.tools.notes import note_effects
from nome_core.tools.receipts import ToolReceipt, denied_receipt
from nome_core.tools.state import Call


class CallHandlers:
    def __init__(self, bus: CommandBus, tools: ToolHandlers, *, approval_ttl_s: float) -> None:
        self.bus = bus
        self.tools = tools
        self.approval_ttl_s = approval_ttl_s

    def get(self, tenant_id: str, call_id: str) -> DirectCall | None:
        return owned_by(self.bus.load(call_id, evolve), tenant_id)  # type: ignore[no-any-return]

    async def call(
        self, actor: Actor, cmd: CallTool, *, claim: Claim | None = None
    ) -> Outcome[DirectCall | None]:
        """Run the call now when the policy allows it, else deny it or ask for approval."""
        spec = await self.tools.registry.get(actor.tenant_id, cmd.tool)
        if spec is None:
            raise NotFound(f"no such tool: {cmd.tool}")
        if spec.source == "builtin":
            check_arguments(spec.name, cmd.arguments)
        if cmd.tool == "thread.note" and cmd.thread_id is None:
            raise Invalid("thread.note needs a thread_id")
        if cmd.thread_id is not None:
            thread = await asyncio.to_thread(self.bus.load, cmd.thread_id, threads.evolve)
            live_thread(owned_by(thread, actor.tenant_id))
        decision = await self.tools.decide(
            actor.tenant_id, cmd.tool, calls_so_far=0, roles=cmd.roles
        )
        call = Call(
            call_id=cmd.call_id,
            work_item_id=cmd.work_item_id,
            tool=cmd.tool,
            arguments=cmd.arguments,
            policy=decision,
        )
        called = ToolCalled(
            call_id=cmd.call_id, tool=cmd.tool, arguments=cmd.arguments, policy=decision
        )
        drafts: list[Decided] = [Draft(called, cmd.work_item_id)]
        if decision.decision == "approval_required":
            drafts += approvals.request(
                call, self.bus.clock.new_id(), self.bus.clock.now(), self.approval_ttl_s
            )
        else:
            receipt = await self._run(actor, call, cmd.thread_id)
            drafts.append(
                Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
            )
        return await self._record(actor, cmd.call_id, cmd.thread_id, drafts, new=True, claim=claim)

    async def resolve(self, actor: Actor, cmd: ResolveApproval) -> Outcome[DirectCall | None]:
        """Answer the call's approval; an approved call runs at once, in this request."""
        outcome = await self.bus.execute(
            cmd.stream_id,
            evolve,
            lambda state: approvals.resolve(cmd, state, actor.meta.principal),
            actor,
            thread_id=cmd.thread_id,
        )
        if cmd.decision == "approved":
            await self.finish(actor, cmd.stream_id)
        return outcome

    async def finish(self, actor: Actor, call_id: str) -> ToolReceipt | None:
        """Run an approved call that has no receipt yet (after approval, or by the sweep
        when the approver's process died first)."""
        state = await asyncio.to_thread(self.get, actor.tenant_id, call_id)
        if (
            state is None
            or state.call.receipt is not None
            or state.call.approval_status != "approved"
        ):
            return state.call.receipt if state else None
        receipt = await self._run(actor, state.call, state.thread_id)
        completed = Draft(ToolCompleted(call_id=call_id, receipt=receipt), state.call.work_item_id)
        outcome = await self._record(actor, call_id, state.thread_id, [completed])
        return outcome.state.call.receipt if outcome.state else None

    async def _run(self, actor: Actor, call: Call, thread_id: str | None) -> ToolReceipt:
        context = CallContext(tenant_id=actor.tenant_id, run_id=None, thread_id=thread_id)
        try:
            return await self.tools.execute(call, context)
        except ToolQueued as queued:
            # A direct caller is waiting on the answer: an unreachable backend is an error now.
            return denied_receipt(
                receipt_id=self.bus.clock.new_id(),
                run_id=None,
                call=call,
                error=str(queued),
                now=self.bus.clock.now(),
                policy_version=call.policy.version,
                status="error",
                approval_id=call.approval_id,
            )

    async def _record(
        self,
        actor: Actor,
        call_id: str,
        thread_id: str | None,
        drafts: Sequence[Decided],
        *,
        new: bool = False,
        claim: Claim | None = None,
    ) -> Outcome[DirectCall | None]:
        """The call's events; a `thread.note` lands in its thread in the same commit."""
        specs = [Spec(call_id, evolve, thread_id=thread_id, new=new)]
        if thread_id is not None:
            specs.append(Spec(thread_id, threads.evolve, thread_id=thread_id))

        def decide(states: list[Any]) -> list[list[Decided]]:
            decided: list[list[Decided]] = [list(drafts)]
            if thread_id is None:
                return decided
            folded = states[0]
            for draft in drafts:
                folded = evolve(folded, unrecorded(draft))
            effects: list[Decided] = []
            thread = states[1]
            if thread is not None and not thread.deleted and folded is not None:
                for draft in drafts:
                    if isinstance(completed := payload(draft), ToolCompleted):
                        effects += note_effects(folded.calls, completed, episode_id=None)
            decided.append(effects)
            return decided

        outcome, *_ = await self.bus.execute_many(specs, decide, actor, claim=claim)
        return outcome
