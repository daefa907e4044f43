"""Tool read models: effective policy changes, receipts (by id and by run), and the recent
calls a policy simulation replays."""

from __future__ import annotations

import msgspec

from nome_core.eventstore import Event
from nome_core.runs.events import (
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    ToolCalled,
    ToolCompleted,
)
from nome_core.tools.events import PolicyChanged
from nome_core.tools.policy import Policy
from projections.engine import Projection, View

RECENT_CALLS = 1000


class RecentCall(msgspec.Struct, kw_only=True):
    """What a policy decided for one call, with what it decided on."""

    call_id: str
    run_id: str | None
    tool: str
    decision: str
    rule: str
    calls_so_far: int
    creator_roles: list[str]
    at: str


class _RunFacts(msgspec.Struct, kw_only=True):
    roles: list[str]
    counts: dict[str, int] = {}


_encode = msgspec.json.Encoder().encode
_decode_facts = msgspec.json.Decoder(_RunFacts).decode


class ToolsProjection(Projection):
    name = "tools"
    types = frozenset(
        {
            PolicyChanged.type,
            ToolCalled.type,
            ToolCompleted.type,
            RunCreated.type,
            RunCompleted.type,
            RunFailed.type,
            RunCancelled.type,
        }
    )

    def policy(self, tenant_id: str, tool: str) -> str:
        return self.key("policy", tenant_id, tool)

    def receipt(self, tenant_id: str, receipt_id: str) -> str:
        return self.key("receipt", tenant_id, receipt_id)

    def receipts_of(self, tenant_id: str, stream_id: str) -> str:
        return self.key("receipts", tenant_id, stream_id)

    def recent_calls(self, tenant_id: str) -> str:
        return self.key("recent", tenant_id)

    def _facts(self, run_id: str) -> str:
        return self.key("run", run_id)

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        match event.data:
            case PolicyChanged() as changed:
                policy = Policy(
                    tool=changed.tool,
                    max_calls_per_run=changed.max_calls_per_run,
                    approval=changed.approval,  # type: ignore[arg-type]
                    offline=changed.offline,  # type: ignore[arg-type]
                    allowed_roles=changed.allowed_roles,
                    version=event.seq + 1,
                )
                view.set(self.policy(tenant, changed.tool), _encode(policy))
            case RunCreated(creator_roles=roles):
                view.set(self._facts(event.stream_id), _encode(_RunFacts(roles=roles)))
            case RunCompleted() | RunFailed() | RunCancelled():
                view.delete(self._facts(event.stream_id))
            case ToolCalled() as called:
                self._remember_call(event, called, view)
            case ToolCompleted(receipt=receipt):
                view.set(self.receipt(tenant, receipt.id), _encode(receipt))
                view.zadd(self.receipts_of(tenant, event.stream_id), event.seq, receipt.id)

    def _remember_call(self, event: Event, called: ToolCalled, view: View) -> None:
        facts_key = self._facts(event.stream_id)
        raw = view.get(facts_key) if event.run_id else None
        facts = _decode_facts(raw) if raw else _RunFacts(roles=[])
        so_far = facts.counts.get(called.tool, 0)
        if raw is not None:
            facts.counts[called.tool] = so_far + 1
            view.set(facts_key, _encode(facts))
        recent = RecentCall(
            call_id=called.call_id,
            run_id=event.run_id,
            tool=called.tool,
            decision=called.policy.decision,
            rule=called.policy.rule,
            calls_so_far=so_far,
            creator_roles=facts.roles,
            at=event.at,
        )
        key = self.recent_calls(event.tenant_id)
        view.lpush(key, _encode(recent))
        view.ltrim(key, 0, RECENT_CALLS - 1)
