"""Direct tool calls (`POST /v1/tools/call`) outside any run: decide, run, record."""

from __future__ import annotations

import asyncio
from typing import Any

from nome_api.worker.tools import ToolQueued, ToolRunner
from nome_core.application import Actor, Application
from nome_core.eventstore import Draft
from nome_core.runs.events import PolicyDecision, ToolCalled, ToolCompleted
from nome_core.runs.state import Call
from nome_core.tools import policy as policies
from nome_core.tools.calls import DirectCall
from nome_core.tools.receipts import ToolReceipt, denied_receipt


async def decide_direct(
    tools: ToolRunner, tenant_id: str, tool: str, roles: list[str]
) -> PolicyDecision:
    policy = await tools.current_policy(tenant_id, tool)
    return policies.decide(policy, calls_so_far=0, creator_roles=roles)


async def start_direct_call(
    app: Application,
    tools: ToolRunner,
    actor: Actor,
    *,
    tool: str,
    arguments: Any,
    thread_id: str | None,
    decision: PolicyDecision,
    approval_ttl_s: float,
) -> tuple[DirectCall, int | None]:
    """Record a direct call: run it now when allowed, else deny it or ask for approval."""
    call_id, work_item = app.clock.new_id(), app.clock.new_id()
    called = ToolCalled(call_id=call_id, tool=tool, arguments=arguments, policy=decision)
    call = Call(
        call_id=call_id, work_item_id=work_item, tool=tool, arguments=arguments, policy=decision
    )
    pending = DirectCall(id=call_id, tenant_id=actor.tenant_id, thread_id=thread_id, calls=(call,))
    drafts: list[Any] = [Draft(called, work_item)]
    if decision.decision == "approval_required":
        from nome_core.approvals import decide as approvals_decide

        drafts += approvals_decide.request(
            call, app.clock.new_id(), app.clock.now(), approval_ttl_s
        )
    else:
        receipt = await _run_or_refuse(tools, pending, call)
        drafts.append(Draft(ToolCompleted(call_id=call_id, receipt=receipt), work_item))
    outcome = await app.record_direct_call(actor, call_id, thread_id, drafts)
    assert outcome.state is not None
    return outcome.state, outcome.position


async def finish_direct_call(
    app: Application, tools: ToolRunner, actor: Actor, call_id: str
) -> ToolReceipt | None:
    """Run an approved direct call that has no receipt yet (after approval, or by the sweep)."""
    state = await asyncio.to_thread(app.direct_call, call_id)
    if state is None or state.call.receipt is not None or state.call.approval_status != "approved":
        return state.call.receipt if state else None
    receipt = await _run_or_refuse(tools, state, state.call)
    completed = Draft(ToolCompleted(call_id=call_id, receipt=receipt), state.call.work_item_id)
    outcome = await app.record_call_step(actor, call_id, state.thread_id, [completed])
    assert outcome.state is not None
    return outcome.state.call.receipt


async def _run_or_refuse(tools: ToolRunner, state: DirectCall, call: Call) -> ToolReceipt:
    try:
        return await tools.execute(state, call)
    except ToolQueued as queued:
        # A direct caller is waiting on the answer: an unreachable backend is an error now.
        now = tools.clock.now()
        return denied_receipt(
            receipt_id=tools.clock.new_id(),
            run_id=None,
            call=call,
            error=str(queued),
            now=now,
            policy_version=call.policy.version,
            status="error",
            approval_id=call.approval_id,
        )
