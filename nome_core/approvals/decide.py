"""Approval commands: request one for a waiting call, resolve it exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Protocol

from nome_core.approvals.errors import AdminApprovalRequired, AlreadyResolved, ApprovalNotFound
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.clock import format_time, parse_time
from nome_core.eventstore import DomainEvent, Draft
from nome_core.runs.events import ToolCompleted
from nome_core.runs.state import Call
from nome_core.tools.receipts import ToolReceipt, denied_receipt


def request(call: Call, approval_id: str, now: str, ttl_s: float) -> list[DomainEvent | Draft]:
    tier: Literal["required", "admin"] = (
        "admin" if call.policy.rule == "approval:admin" else "required"
    )
    expires = format_time(parse_time(now) + timedelta(seconds=ttl_s))
    requested = ApprovalRequested(
        approval_id=approval_id,
        call_id=call.call_id,
        tool=call.tool,
        arguments=call.arguments,
        tier=tier,
        expires_at=expires,
    )
    return [Draft(requested, call.work_item_id)]


class WithCalls(Protocol):
    """A stream that holds tool calls: a run, or a direct call."""

    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def calls(self) -> tuple[Call, ...]: ...


def resolve(
    state: WithCalls | None,
    tenant_id: str,
    approval_id: str,
    *,
    decision: str,
    by: str | None,
    reason: str | None,
    roles: frozenset[str],
    receipt_id: str,
    now: str,
    run_id: str | None,
) -> list[DomainEvent | Draft]:
    """Approve, deny or expire. A denial (or expiry) also records the call's `denied`
    receipt, so the run goes on with the model seeing the refusal."""
    if state is None or state.tenant_id != tenant_id:
        raise ApprovalNotFound()
    call = next((c for c in state.calls if c.approval_id == approval_id), None)
    if call is None:
        raise ApprovalNotFound()
    if call.approval_status != "pending":
        raise AlreadyResolved(call.approval_status or "resolved")
    if call.approval_tier == "admin" and "admin" not in roles and decision != "expired":
        raise AdminApprovalRequired()
    resolved = ApprovalResolved(
        approval_id=approval_id,
        decision=decision,  # type: ignore[arg-type]
        by=by,
        reason=reason,
    )
    events: list[DomainEvent | Draft] = [Draft(resolved, call.work_item_id)]
    if decision != "approved":
        receipt: ToolReceipt = denied_receipt(
            receipt_id=receipt_id,
            run_id=run_id,
            call=call,
            error=f"{decision} by {by or 'nobody'}" + (f": {reason}" if reason else ""),
            now=now,
            approval_id=approval_id,
        )
        events.append(
            Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
        )
    return events
