"""Approval read models: the queue across all devices (oldest first, by status) and the
expiry schedule the worker's job sweeps; and their queries."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.clock import parse_time
from nome_core.events import Event
from projections.engine import Projection, View
from projections.paging import index_page, split_member
from projections.threads import Get

ApprovalStatus = Literal["pending", "approved", "denied", "expired"]


class ApprovalView(msgspec.Struct, kw_only=True):
    """An approval as the API returns it."""

    id: str
    run_id: str | None
    thread_id: str | None
    call_id: str
    tool: str
    arguments: Any
    tier: str
    status: ApprovalStatus
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
    types = frozenset({ApprovalRequested.type, ApprovalResolved.type})

    def doc(self, tenant_id: str, approval_id: str) -> str:
        return self.key("doc", tenant_id, approval_id)

    def ref(self, tenant_id: str, approval_id: str) -> str:
        return self.key("ref", tenant_id, approval_id)

    def index(self, tenant_id: str, status: str | None = None) -> str:
        return self.key("idx", tenant_id, status or "all")

    def expiry(self) -> str:
        """`tenant|approval` of pending approvals, scored by expiry time (epoch seconds)."""
        return self.key("expiry")

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
                view.set(self.doc(tenant, old.id), _encode(new))


class ApprovalQueries:
    """The approval queue of one tenant; where an approval lives; what is due."""

    def __init__(self, views: ApprovalsProjection, redis: Any, get: Get) -> None:
        self.views = views
        self.redis = redis
        self.get = get

    async def approval(self, tenant_id: str, approval_id: str) -> bytes | None:
        return await self.get(self.views.doc(tenant_id, approval_id))

    async def page(
        self, tenant_id: str, *, status: ApprovalStatus | None, limit: int, cursor: str | None
    ) -> bytes:
        """Oldest first, across every device."""
        views = self.views
        return await index_page(
            self.redis,
            views.index(tenant_id, status),
            limit=limit,
            cursor=cursor,
            doc_key=lambda approval_id: views.doc(tenant_id, approval_id),
        )

    async def located(
        self, tenant_id: str, approval_id: str
    ) -> tuple[ApprovalRef, ApprovalView] | None:
        """Where the approval's call lives (its run or direct call), and the approval."""
        ref, doc = await self.redis.mget(
            [self.views.ref(tenant_id, approval_id), self.views.doc(tenant_id, approval_id)]
        )
        if ref is None or doc is None:
            return None
        return _decode_ref(ref), _decode(doc)

    async def due(self, now: float, *, limit: int = 100) -> list[tuple[str, str]]:
        """`(tenant, approval)` of pending approvals that expired by `now`."""
        members = await self.redis.zrangebyscore(self.views.expiry(), 0, now, start=0, num=limit)
        return [split_member(m) for m in members]
