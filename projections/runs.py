"""Run read models: run documents (by tenant, thread and status), the runnable set the
workers claim from, and credits consumed per tenant."""

from __future__ import annotations

import msgspec

from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.eventstore import Event
from nome_core.runs.events import (
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.threads.events import RunAdmitted
from projections.engine import Projection, View
from projections.threads import order_member


class RunView(msgspec.Struct, kw_only=True):
    """A run as the API returns it."""

    id: str
    thread_id: str
    agent_id: str
    status: str
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
_TERMINAL = (RunCompleted.type, RunFailed.type, RunCancelled.type)


class RunsProjection(Projection):
    name = "runs"
    types = frozenset({RunAdmitted.type})

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
        """`tenant|run` of every admitted, unfinished run that is not waiting on a person."""
        return self.key("runnable")

    def credits(self, tenant_id: str) -> str:
        return self.key("credits", tenant_id)

    @staticmethod
    def may_change_runnable(event: Event) -> bool:
        """Whether applying `event` can add to or remove from the runnable set: a run's own
        events, and a thread admitting one of its runs."""
        return event.run_id is not None or isinstance(event.data, RunAdmitted)

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        if isinstance(event.data, RunAdmitted):
            view.sadd(self.runnable(), f"{tenant}|{event.data.run_id}")
            return
        run_id = event.stream_id
        doc_key = self.doc(tenant, run_id)
        if isinstance(event.data, RunCreated):
            run = RunView(
                id=run_id,
                thread_id=event.thread_id or "",
                agent_id=event.data.agent_id,
                status="pending",
                awaiting_approval=False,
                tier=event.data.tier,
                created_at=event.at,
                started_at=None,
                ended_at=None,
                event_count=1,
                usage=Usage(),
                error=None,
            )
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
                view.hincrby(self.credits(tenant), "consumed", usage.credits)
            case RunFailed(error=error):
                run = msgspec.structs.replace(run, status="failed", ended_at=event.at, error=error)
            case RunCancelled():
                run = msgspec.structs.replace(run, status="cancelled", ended_at=event.at)
        if event.type in _TERMINAL:
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
