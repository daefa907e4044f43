"""The approval queue's background work: unanswered approvals expire (a job), and an
approved direct call whose approver's process died before running it is run (a follower)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from nome_core.application import Actor, Application
from nome_core.approvals.commands import ResolveApproval
from nome_core.approvals.events import ApprovalResolved
from nome_core.clock import parse_time
from nome_core.errors import DomainError
from nome_core.events import Event, Meta
from projections.approvals import ApprovalQueries

log = structlog.get_logger("nome.approvals")


class ExpireApprovals:
    """Every second, the approvals past their `expires_at` are resolved as `expired`."""

    name = "expire-approvals"
    interval_s = 1.0
    concurrency = 8

    def __init__(self, app: Application, approvals: ApprovalQueries) -> None:
        self.app = app
        self.approvals = approvals

    async def due(self) -> Sequence[tuple[str, str]]:
        return await self.approvals.due(time.time())

    async def handle(self, item: tuple[str, str]) -> None:
        tenant_id, approval_id = item
        found = await self.approvals.located(tenant_id, approval_id)
        if found is None:
            return
        ref, _ = found
        cmd = ResolveApproval(
            approval_id=approval_id,
            stream_id=ref.stream_id,
            run_id=ref.run_id,
            thread_id=ref.thread_id,
            decision="expired",
            reason="no answer before the approval expired",
            roles=frozenset({"admin"}),
            receipt_id=self.app.new_id(),
            at=self.app.clock.now(),
        )
        try:
            await self.app.resolve_approval(Actor(tenant_id, Meta(principal="system:expiry")), cmd)
        except DomainError:
            return  # answered meanwhile: the answer stands
        log.info("approval_expired", approval_id=approval_id, tenant=tenant_id)


class FinishApprovedCalls:
    """An approved direct call is run by the approver's request at once; one still without
    a receipt a while later (that process died) is run here."""

    name = "finish-approved-calls"
    types = frozenset({ApprovalResolved.type})

    def __init__(self, app: Application, *, grace_s: float = 10.0) -> None:
        self.app = app
        self.grace_s = grace_s

    async def handle(self, event: Event) -> float | None:
        resolved = event.data
        if not isinstance(resolved, ApprovalResolved) or resolved.decision != "approved":
            return None
        if event.run_id is not None:
            return None  # a run's worker runs its approved calls
        wait = parse_time(event.at).timestamp() + self.grace_s - time.time()
        if wait > 0:
            return wait
        actor = Actor(event.tenant_id, Meta(principal="system:approvals"))
        await self.app.calls.finish(actor, event.stream_id)
        return None
