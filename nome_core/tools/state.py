"""Tool state: a tool's policy for one tenant (folded from its changes; the default until
changed), and one call as its events describe it."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from nome_core.events import Event
from nome_core.tools.events import PolicyChanged, PolicyDecision, ToolCalled, ToolCompleted
from nome_core.tools.policy import APPROVALS, OFFLINE, Approval, Offline, Policy
from nome_core.tools.receipts import ToolReceipt

_POLICY_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650004")


def policy_stream_id(tenant_id: str, tool: str) -> str:
    """One stream per tenant and tool, so each change gets the next version."""
    return str(uuid.uuid5(_POLICY_NAMESPACE, f"{tenant_id}/{tool}"))


def policy_of(changed: PolicyChanged, seq: int) -> Policy:
    """The policy a change sets; version 1 is the built-in default, so change n is n + 1."""
    return Policy(
        tool=changed.tool,
        max_calls_per_run=changed.max_calls_per_run,
        approval=_approval(changed.approval),
        offline=_offline(changed.offline),
        allowed_roles=changed.allowed_roles,
        version=seq + 1,
    )


def evolve(state: Policy | None, event: Event) -> Policy | None:
    match event.data:
        case PolicyChanged() as changed:
            return policy_of(changed, event.seq)
    return state


def _approval(value: str) -> Approval:
    return value if value in APPROVALS else "none"


def _offline(value: str) -> Offline:
    return value if value in OFFLINE else "fail"


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call and, once done, its receipt; its approval while it waits for one
    (the approvals context folds those fields)."""

    call_id: str
    work_item_id: str | None
    tool: str
    arguments: Any
    policy: PolicyDecision
    receipt: ToolReceipt | None = None
    approval_id: str | None = None
    approval_tier: str | None = None
    approval_status: str | None = None  # pending, approved, denied, expired
    approval_expires_at: str | None = None


def with_call(calls: tuple[Call, ...], call_id: str, **changes: Any) -> tuple[Call, ...]:
    return tuple(
        msgspec.structs.replace(c, **changes) if c.call_id == call_id else c for c in calls
    )


def evolve_calls(calls: tuple[Call, ...], event: Event) -> tuple[Call, ...]:
    """A stream's tool calls after one of its tool events."""
    match event.data:
        case ToolCalled() as called:
            call = Call(
                call_id=called.call_id,
                work_item_id=event.work_item_id,
                tool=called.tool,
                arguments=called.arguments,
                policy=called.policy,
            )
            return (*calls, call)
        case ToolCompleted(call_id=call_id, receipt=receipt):
            return with_call(calls, call_id, receipt=receipt)
    return calls
