"""Approval read models: the queue across all devices (oldest first, by status), the expiry
schedule the worker sweeps, and approved direct calls still to be carried out."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.clock import parse_time
from nome_core.eventstore import Event
from nome_core.runs.events import ToolCompleted
from projections.engine import Projection, View


class ApprovalView(msgspec.Struct, kw_only=True):
    """An approval as the API returns it."""

    id: str
    run_id: str | None
    thread_id: str | None
    call_id: str
    tool: str
    arguments: Any
    tier: str
    status: str
    requested_at: str
    expires_at: str
    resolved_at: str | None = None
    resolved_by: str | None = None
    reason: str | None = None


class ApprovalRef(msgspec.Struct, kw_only=True):
    """Where an approval lives in the log, for the commands that resolve it."""

    stream_id: str
    run_id: str | None
    thread_id: str | None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ApprovalView).decode
_decode_ref = msgspec.json.Decoder(ApprovalRef).decode


def epoch(at: str) -> float:
    return parse_time(at).timestamp()


class ApprovalsProjection(Projection):
    name = "approvals"
    types = frozenset({ApprovalRequested.type, ApprovalResolved.type, ToolCompleted.type})

    def doc(self, tenant_id: str, approval_id: str) -> str:
        return self.key("doc", tenant_id, approval_id)

    def ref(self, tenant_id: str, approval_id: str) -> str:
        return self.key("ref", tenant_id, approval_id)

    def index(self, tenant_id: str, status: str | None = None) -> str:
        return self.key("idx", tenant_id, status or "all")

    def expiry(self) -> str:
        """`tenant|approval` of pending approvals, scored by expiry time (epoch seconds)."""
        return self.key("expiry")

    def approved_direct(self) -> str:
        """`tenant|approval` of approved direct calls whose tool has not run yet."""
        return self.key("approved-direct")

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        match event.data:
            case ApprovalRequested() as requested:
                approval = ApprovalView(
                    id=requested.approval_id,
                    run_id=event.run_id,
                    thread_id=event.thread_id,
                    call_id=requested.call_id,
                    tool=requested.tool,
                    arguments=requested.arguments,
                    tier=requested.tier,
                    status="pending",
                    requested_at=event.at,
                    expires_at=requested.expires_at,
                )
                ref = ApprovalRef(
                    stream_id=event.stream_id, run_id=event.run_id, thread_id=event.thread_id
                )
                member = f"{event.at}|{requested.approval_id}"
                view.set(self.doc(tenant, requested.approval_id), _encode(approval))
                view.set(self.ref(tenant, requested.approval_id), _encode(ref))
                view.zadd(self.index(tenant), 0, member)
                view.zadd(self.index(tenant, "pending"), 0, member)
                view.zadd(self.expiry(), epoch(requested.expires_at), f"{tenant}|{approval.id}")
            case ApprovalResolved() as resolved:
                raw = view.get(self.doc(tenant, resolved.approval_id))
                if raw is None:
                    return
                old = _decode(raw)
                new = msgspec.structs.replace(
                    old,
                    status=resolved.decision,
                    resolved_at=event.at,
                    resolved_by=resolved.by,
                    reason=resolved.reason,
                )
                member = f"{old.requested_at}|{old.id}"
                view.zrem(self.index(tenant, "pending"), member)
                view.zadd(self.index(tenant, resolved.decision), 0, member)
                view.zrem(self.expiry(), f"{tenant}|{old.id}")
                if resolved.decision == "approved" and event.run_id is None:
                    view.zadd(self.approved_direct(), epoch(event.at), f"{tenant}|{old.id}")
                view.set(self.doc(tenant, old.id), _encode(new))
            case ToolCompleted(receipt=receipt) if receipt.approval_id and event.run_id is None:
                view.zrem(self.approved_direct(), f"{tenant}|{receipt.approval_id}")

    @staticmethod
    def decode_ref(raw: bytes) -> ApprovalRef:
        return _decode_ref(raw)
