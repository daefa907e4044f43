"""Run read models: run documents (by tenant, thread and status) and the runnable set the
workers claim from; and their queries."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.accounts.events import SlotTaken
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.events import Event
from nome_core.runs.events import (
    TERMINAL_TYPES,
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.runs.state import RunState, RunStatus, evolve
from nome_core.threads.events import RunAdmitted
from projections.engine import Projection, View
from projections.paging import (
    MEMBER_CURSOR,
    decode_cursor,
    encode_cursor,
    index_page,
    page_json,
    split_member,
)
from projections.threads import Get, order_member


class RunView(msgspec.Struct, kw_only=True):
    """A run as the API returns it."""

    id: str
    thread_id: str
    agent_id: str
    status: RunStatus
    awaiting_approval: bool
    tier: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    event_count: int
    usage: Usage
    error: ErrorInfo | None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RunView).decode


class RunsProjection(Projection):
    name = "runs"
    types = frozenset({RunAdmitted.type, SlotTaken.type})

    def wants(self, event: Event) -> bool:
        # Every event of a run's own stream moves its event count.
        return event.run_id == event.stream_id or event.type in self.types

    def doc(self, tenant_id: str, run_id: str) -> str:
        return self.key("doc", tenant_id, run_id)

    def index(self, tenant_id: str) -> str:
        return self.key("idx", tenant_id)

    def by_thread(self, tenant_id: str, thread_id: str) -> str:
        return self.key("thread", tenant_id, thread_id)

    def by_status(self, tenant_id: str, status: str) -> str:
        return self.key("status", tenant_id, status)

    def awaiting(self, run_id: str) -> str:
        return self.key("awaiting", run_id)

    def runnable(self) -> str:
        """`tenant|run` of every unfinished run holding one of its tenant's run slots that
        is not waiting on a person."""
        return self.key("runnable")

    @staticmethod
    def may_change_runnable(event: Event) -> bool:
        """Whether applying `event` can add to or remove from the runnable set: a run's own
        events, and a run taking a slot (or a thread admitting a run of before slots)."""
        return event.run_id is not None or isinstance(event.data, RunAdmitted | SlotTaken)

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        match event.data:
            # A run may start once it holds one of its tenant's slots; a run admitted before
            # there were slots, once its thread admitted it.
            case SlotTaken(run_id=run_id) | RunAdmitted(run_id=run_id, slotted=False):
                view.sadd(self.runnable(), f"{tenant}|{run_id}")
                return
            case RunAdmitted():
                return
        run_id = event.stream_id
        doc_key = self.doc(tenant, run_id)
        if isinstance(event.data, RunCreated):
            created = evolve(None, event)
            assert created is not None
            run = view_of(created)
            member = order_member(event.at, run_id)
            view.zadd(self.index(tenant), 0, member)
            view.zadd(self.by_thread(tenant, run.thread_id), 0, member)
            view.zadd(self.by_status(tenant, "pending"), 0, member)
            view.set(doc_key, _encode(run))
            return
        raw = view.get(doc_key)
        if raw is None:
            return
        old = _decode(raw)
        run = msgspec.structs.replace(old, event_count=event.seq)
        match event.data:
            case RunStarted():
                run = msgspec.structs.replace(run, status="active", started_at=event.at)
            case ApprovalRequested(approval_id=approval_id):
                waiting = [*self._awaiting(view, run_id), approval_id]
                self._set_awaiting(view, tenant, run_id, waiting)
                run = msgspec.structs.replace(run, awaiting_approval=True)
            case ApprovalResolved(approval_id=approval_id):
                waiting = [a for a in self._awaiting(view, run_id) if a != approval_id]
                self._set_awaiting(view, tenant, run_id, waiting)
                run = msgspec.structs.replace(run, awaiting_approval=bool(waiting))
            case RunCompleted(usage=usage):
                run = msgspec.structs.replace(
                    run, status="completed", ended_at=event.at, usage=usage
                )
            case RunFailed(error=error, usage=usage):
                run = msgspec.structs.replace(
                    run, status="failed", ended_at=event.at, error=error, usage=usage or Usage()
                )
            case RunCancelled(usage=usage):
                run = msgspec.structs.replace(
                    run, status="cancelled", ended_at=event.at, usage=usage or Usage()
                )
        if event.type in TERMINAL_TYPES:
            view.srem(self.runnable(), f"{tenant}|{run_id}")
            view.delete(self.awaiting(run_id))
            run = msgspec.structs.replace(run, awaiting_approval=False)
        if run.status != old.status:
            member = order_member(old.created_at, run_id)
            view.zrem(self.by_status(tenant, old.status), member)
            view.zadd(self.by_status(tenant, run.status), 0, member)
        view.set(doc_key, _encode(run))

    def _awaiting(self, view: View, run_id: str) -> list[str]:
        raw = view.get(self.awaiting(run_id))
        return msgspec.json.decode(raw, type=list[str]) if raw else []

    def _set_awaiting(self, view: View, tenant: str, run_id: str, approvals: list[str]) -> None:
        """Approvals pending; while any waits, no worker should pick the run up."""
        member = f"{tenant}|{run_id}"
        if approvals:
            view.set(self.awaiting(run_id), _encode(approvals))
            view.srem(self.runnable(), member)
        else:
            view.delete(self.awaiting(run_id))
            view.sadd(self.runnable(), member)


def view_of(state: RunState) -> RunView:
    """A run as the API returns it, from its state (command answers)."""
    return RunView(
        id=state.id,
        thread_id=state.thread_id,
        agent_id=state.agent_id,
        status=state.status,
        awaiting_approval=state.awaiting_approval,
        tier=state.tier,
        created_at=state.created_at,
        started_at=state.started_at,
        ended_at=state.ended_at,
        event_count=state.event_count,
        usage=state.usage,
        error=state.error,
    )


class _StatusOnly(msgspec.Struct):
    status: str


_decode_status = msgspec.json.Decoder(_StatusOnly).decode


class RunQueries:
    """Runs of one tenant, and the runnable set the workers claim from."""

    def __init__(self, views: RunsProjection, redis: Any, get: Get) -> None:
        self.views = views
        self.redis = redis
        self.get = get

    async def run(self, tenant_id: str, run_id: str) -> bytes | None:
        return await self.get(self.views.doc(tenant_id, run_id))

    async def exists(self, tenant_id: str, run_id: str) -> bool:
        return bool(await self.redis.exists(self.views.doc(tenant_id, run_id)))

    async def page(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None,
        thread_id: str | None = None,
        status: RunStatus | None = None,
    ) -> bytes:
        """Newest first; of one thread, of one status, or both."""
        views = self.views
        if thread_id and status:
            return await self._thread_by_status(tenant_id, thread_id, status, limit, cursor)
        index = (
            views.by_thread(tenant_id, thread_id)
            if thread_id
            else views.by_status(tenant_id, status)
            if status
            else views.index(tenant_id)
        )
        return await index_page(
            self.redis,
            index,
            limit=limit,
            cursor=cursor,
            doc_key=lambda run_id: views.doc(tenant_id, run_id),
        )

    async def _thread_by_status(
        self, tenant_id: str, thread_id: str, status: str, limit: int, cursor: str | None
    ) -> bytes:
        """There is no index of a thread's runs by status: filter the thread's runs (few)
        before paging, so pages stay full and total_count counts only matches."""
        after = decode_cursor(cursor, MEMBER_CURSOR)
        every = await self.redis.zrangebylex(self.views.by_thread(tenant_id, thread_id), "-", "+")
        docs = (
            await self.redis.mget(
                [self.views.doc(tenant_id, m.decode().rsplit("|", 1)[1]) for m in every]
            )
            if every
            else []
        )
        matching = [
            (m, d)
            for m, d in zip(every, docs, strict=True)
            if d is not None and _decode_status(d).status == status
        ]
        rest = [(m, d) for m, d in matching if after is None or m.decode() > after]
        chosen = rest[:limit]
        next_cursor = encode_cursor(chosen[-1][0].decode()) if len(rest) > limit else None
        return page_json([d for _, d in chosen], next_cursor, len(matching))

    async def runnable(self) -> list[tuple[str, str]]:
        """`(tenant, run)` of every admitted, unfinished run not waiting on a person."""
        members = await self.redis.smembers(self.views.runnable())
        return [split_member(m) for m in members]
