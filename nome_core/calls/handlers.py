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
from nome_core.calls.decide import start
from nome_core.calls.state import DirectCall, evolve
from nome_core.clock import parse_time
from nome_core.errors import Invalid, NotFound
from nome_core.events import Decided, Draft, payload, unrecorded
from nome_core.threads import state as threads
from nome_core.threads.decide import live as live_thread
from nome_core.tools.builtin import check_arguments
from nome_core.tools.events import ToolCalled, ToolCompleted
from nome_core.tools.executor import STARTED_GRACE_S, CallContext, ToolQueued, unfinished_receipt
from nome_core.tools.handlers import ToolHandlers
from nome_core.tools.notes import note_effects
from nome_core.tools.receipts import ToolReceipt, denied_receipt
from nome_core.tools.state import Call


class CallHandlers:
    def __init__(self, bus: CommandBus, tools: ToolHandlers, *, approval_ttl_s: float) -> None:
        self.bus = bus
        self.tools = tools
        self.approval_ttl_s = approval_ttl_s
        # How long a started call is left to whoever started it before it is settled.
        self.started_grace_s = STARTED_GRACE_S

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
        elif decision.decision == "deny":
            # Denied: it never reaches its tool, so there is no effect to fence.
            receipt = await self._run(actor, call, cmd.thread_id)
            drafts.append(
                Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
            )
        else:
            # The fence: `tool.started` is in the log (with the caller's claim) before the
            # tool acts, so a crash while it runs leaves a call known to be half done (the
            # worker's sweep settles it) rather than none, which a retry would run again.
            drafts += start(call, None, attempt=1, idempotent=spec.idempotent)
            await self._record(actor, cmd.call_id, cmd.thread_id, drafts, new=True, claim=claim)
            return await self._complete(actor, call, cmd.thread_id)
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
        when the approver's process died first), if this process wins its start."""
        state = await asyncio.to_thread(self.get, actor.tenant_id, call_id)
        if (
            state is None
            or state.call.receipt is not None
            or state.call.approval_status != "approved"
            or state.attempt is not None
        ):
            return state.call.receipt if state else None
        if not await self._start(actor, state, attempt=1):
            return None  # another process started it
        outcome = await self._complete(actor, state.call, state.thread_id)
        return outcome.state.call.receipt if outcome.state else None

    async def settle(self, actor: Actor, call_id: str) -> float | None:
        """A call started without a receipt: wait while whoever started it may still be
        running it (seconds to wait); then run it again if its tool is safe to run again,
        else record that its outcome is unknown."""
        state = await asyncio.to_thread(self.get, actor.tenant_id, call_id)
        if state is None or not state.left_open or state.attempt is None:
            return None
        attempt = state.attempt
        clock = self.bus.clock
        waited = (parse_time(clock.now()) - parse_time(attempt.at)).total_seconds()
        wait = self.started_grace_s - waited
        if wait > 0:
            return wait
        if attempt.idempotent:
            if await self._start(actor, state, attempt=attempt.number + 1):
                await self._complete(actor, state.call, state.thread_id)
            return None
        clock = self.bus.clock
        receipt = unfinished_receipt(
            state.call,
            receipt_id=clock.new_id(),
            run_id=None,
            started_at=attempt.at,
            now=clock.now(),
        )
        completed = ToolCompleted(call_id=call_id, receipt=receipt)

        def decide(current: DirectCall | None) -> list[Decided]:
            still = current is not None and current.left_open and current.attempt == attempt
            return [Draft(completed, state.call.work_item_id)] if still else []

        await self.bus.execute(call_id, evolve, decide, actor, thread_id=state.thread_id)
        return None

    async def _start(self, actor: Actor, state: DirectCall, *, attempt: int) -> bool:
        """Append this attempt's `tool.started`; whether this process's append won."""
        spec = await self.tools.registry.get(actor.tenant_id, state.call.tool)
        # A tool gone since is not run either (its receipt says so): nothing to fence.
        idempotent = spec is None or spec.idempotent
        outcome = await self.bus.execute(
            state.id,
            evolve,
            lambda current: start(state.call, current, attempt=attempt, idempotent=idempotent),
            actor,
            thread_id=state.thread_id,
        )
        return bool(outcome.events)

    async def _complete(
        self, actor: Actor, call: Call, thread_id: str | None
    ) -> Outcome[DirectCall | None]:
        """Run the started call and record its receipt."""
        receipt = await self._run(actor, call, thread_id)
        completed = Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
        return await self._record(actor, call.call_id, thread_id, [completed])

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
