"""Approval decisions: request one for a waiting call, resolve it exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Protocol

from nome_core.approvals.commands import ResolveApproval
from nome_core.approvals.errors import AdminApprovalRequired, AlreadyResolved, ApprovalNotFound
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.clock import format_time, parse_time
from nome_core.events import Decided, Draft
from nome_core.tools.events import ToolCompleted
from nome_core.tools.receipts import denied_receipt
from nome_core.tools.state import Call


def request(call: Call, approval_id: str, now: str, ttl_s: float) -> list[Decided]:
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
    def calls(self) -> tuple[Call, ...]: ...


def resolve(cmd: ResolveApproval, state: WithCalls | None, by: str | None) -> list[Decided]:
    """Approve, deny or expire. A denial (or expiry) also records the call's `denied`
    receipt, so the run goes on with the model seeing the refusal."""
    call = (
        next((c for c in state.calls if c.approval_id == cmd.approval_id), None) if state else None
    )
    if call is None:
        raise ApprovalNotFound()
    if call.approval_status != "pending":
        raise AlreadyResolved(call.approval_status or "resolved")
    if call.approval_tier == "admin" and "admin" not in cmd.roles and cmd.decision != "expired":
        raise AdminApprovalRequired()
    resolved = ApprovalResolved(
        approval_id=cmd.approval_id, decision=cmd.decision, by=by, reason=cmd.reason
    )
    events: list[Decided] = [Draft(resolved, call.work_item_id)]
    if cmd.decision != "approved":
        receipt = denied_receipt(
            receipt_id=cmd.receipt_id,
            run_id=cmd.run_id,
            call=call,
            error=f"{cmd.decision} by {by or 'nobody'}" + (f": {cmd.reason}" if cmd.reason else ""),
            now=cmd.at,
            approval_id=cmd.approval_id,
            policy_version=call.policy.version,
        )
        events.append(
            Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
        )
    return events


def withdraw(calls: tuple[Call, ...], by: str | None, reason: str) -> list[Decided]:
    """Close every pending approval of a stream that stops (a cancelled run): nobody may
    answer its questions any more."""
    return [
        Draft(
            ApprovalResolved(approval_id=call.approval_id, decision="denied", by=by, reason=reason),
            call.work_item_id,
        )
        for call in calls
        if call.approval_status == "pending" and call.approval_id is not None
    ]
