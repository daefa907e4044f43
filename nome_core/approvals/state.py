"""Tool calls with their approvals: what a stream that holds calls (a run, a direct call)
folds from its tool and approval events."""

from __future__ import annotations

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.events import Event
from nome_core.tools import state as tools_state
from nome_core.tools.state import Call, with_call


def evolve_calls(calls: tuple[Call, ...], event: Event) -> tuple[Call, ...]:
    match event.data:
        case ApprovalRequested() as requested:
            return with_call(
                calls,
                requested.call_id,
                approval_id=requested.approval_id,
                approval_tier=requested.tier,
                approval_status="pending",
                approval_expires_at=requested.expires_at,
            )
        case ApprovalResolved(approval_id=approval_id, decision=decision):
            waiting = next((c for c in calls if c.approval_id == approval_id), None)
            if waiting is None:
                return calls
            return with_call(calls, waiting.call_id, approval_status=decision)
    return tools_state.evolve_calls(calls, event)


def pending(calls: tuple[Call, ...]) -> list[Call]:
    """The calls waiting for a person to answer."""
    return [c for c in calls if c.approval_status == "pending"]
