"""Worker jobs on a timer: expire unanswered approvals, carry out approved direct calls
whose approver's process did not get to run them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from nome_api.worker.direct import finish_direct_call
from nome_api.worker.tools import ToolRunner
from nome_core.application import Actor, Application
from nome_core.errors import DomainError
from nome_core.eventstore import Meta
from projections.approvals import ApprovalsProjection

log = structlog.get_logger("nome.sweeper")

# An approver's own request runs an approved direct call at once; the sweep only picks up
# calls left over after this long.
DIRECT_GRACE_S = 10.0


class Sweeper:
    def __init__(
        self,
        app: Application,
        tools: ToolRunner,
        redis: Any,
        approvals: ApprovalsProjection,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.app = app
        self.tools = tools
        self.redis = redis
        self.approvals = approvals
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="nome-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep_failed")
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> int:
        """One pass; returns how many approvals or calls it settled."""
        settled = 0
        now = time.time()
        due = await self.redis.zrangebyscore(self.approvals.expiry(), 0, now, start=0, num=100)
        for member in due:
            tenant_id, approval_id = member.decode().split("|", 1)
            if await self._expire(tenant_id, approval_id):
                settled += 1
        left = await self.redis.zrangebyscore(
            self.approvals.approved_direct(), 0, now - DIRECT_GRACE_S, start=0, num=100
        )
        for member in left:
            tenant_id, approval_id = member.decode().split("|", 1)
            ref = await self._ref(tenant_id, approval_id)
            if ref is not None:
                actor = Actor(tenant_id, Meta(principal="system:sweeper"))
                await finish_direct_call(self.app, self.tools, actor, ref.stream_id)
                settled += 1
        return settled

    async def _ref(self, tenant_id: str, approval_id: str) -> Any:
        raw = await self.redis.get(self.approvals.ref(tenant_id, approval_id))
        return self.approvals.decode_ref(raw) if raw else None

    async def _expire(self, tenant_id: str, approval_id: str) -> bool:
        ref = await self._ref(tenant_id, approval_id)
        if ref is None:
            return False
        actor = Actor(tenant_id, Meta(principal="system:expiry"))
        try:
            await self.app.resolve_approval(
                actor,
                stream_id=ref.stream_id,
                run_id=ref.run_id,
                thread_id=ref.thread_id,
                approval_id=approval_id,
                decision="expired",
                reason="no answer before the approval expired",
                roles=frozenset({"admin"}),
            )
        except DomainError:
            return False  # answered meanwhile: the answer stands
        log.info("approval_expired", approval_id=approval_id, tenant=tenant_id)
        return True
