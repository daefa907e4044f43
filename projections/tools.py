"""Tool read models: receipts (by id and by run), the recent calls a policy simulation
replays, and the registry of the tools each tenant can call; and their queries."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.events import Event
from nome_core.marketplace.events import InstalledTool, PackageInstalled, PackageUninstalled
from nome_core.runs.events import RunCancelled, RunCompleted, RunCreated, RunFailed
from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from nome_core.tools.events import ToolCalled, ToolCompleted
from nome_core.tools.policy import PastCall, Policy
from nome_core.tools.receipts import ReceiptStatus, ToolReceipt
from projections.engine import Projection, View
from projections.paging import score_page
from projections.threads import Get

RECENT_CALLS = 1000


class ReceiptView(msgspec.Struct, kw_only=True):
    """A tool receipt as the API returns it (API.md §5)."""

    id: str
    run_id: str | None
    work_item_id: str | None
    call_id: str
    tool: str
    status: ReceiptStatus
    arguments_sha256: str
    result: Any
    result_sha256: str | None
    error: str | None
    started_at: str
    finished_at: str
    duration_ms: float
    policy_version: int
    approval_id: str | None


def receipt_view(receipt: ToolReceipt) -> ReceiptView:
    return ReceiptView(**msgspec.structs.asdict(receipt))


class PolicyView(msgspec.Struct, kw_only=True):
    """A tool's policy as the API returns it (API.md §5)."""

    tool: str
    max_calls_per_run: int | None
    approval: str
    offline: str
    allowed_roles: list[str]
    version: int


def policy_view(policy: Policy) -> PolicyView:
    return PolicyView(**msgspec.structs.asdict(policy))


class _RunFacts(msgspec.Struct, kw_only=True):
    """What a run's later calls are decided on: its creator's roles, its calls so far."""

    roles: list[str]
    counts: dict[str, int] = {}


_encode = msgspec.json.Encoder().encode
_decode_facts = msgspec.json.Decoder(_RunFacts).decode
_decode_past = msgspec.json.Decoder(PastCall).decode
_decode_spec = msgspec.json.Decoder(ToolSpec).decode


class ToolsProjection(Projection):
    name = "tools"
    types = frozenset(
        {
            ToolCalled.type,
            ToolCompleted.type,
            RunCreated.type,
            RunCompleted.type,
            RunFailed.type,
            RunCancelled.type,
            PackageInstalled.type,
            PackageUninstalled.type,
        }
    )

    def receipt(self, tenant_id: str, receipt_id: str) -> str:
        return self.key("receipt", tenant_id, receipt_id)

    def receipts_of(self, tenant_id: str, stream_id: str) -> str:
        return self.key("receipts", tenant_id, stream_id)

    def recent_calls(self, tenant_id: str) -> str:
        return self.key("recent", tenant_id)

    def installed(self, tenant_id: str) -> str:
        """The tenant's installed tools: name -> ToolSpec JSON (fed by package installs)."""
        return self.key("installed", tenant_id)

    def package_tools(self, tenant_id: str, package: str) -> str:
        """The names an installed package added to `installed` (JSON list)."""
        return self.key("package-tools", tenant_id, package)

    def _facts(self, run_id: str) -> str:
        return self.key("run", run_id)

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        match event.data:
            case RunCreated(creator_roles=roles):
                view.set(self._facts(event.stream_id), _encode(_RunFacts(roles=roles)))
            case RunCompleted() | RunFailed() | RunCancelled():
                view.delete(self._facts(event.stream_id))
            case ToolCalled() as called:
                self._remember_call(event, called, view)
            case ToolCompleted(receipt=receipt):
                view.set(self.receipt(tenant, receipt.id), _encode(receipt_view(receipt)))
                view.zadd(self.receipts_of(tenant, event.stream_id), event.seq, receipt.id)
            case PackageInstalled() as installed:
                self._forget_package(tenant, installed.package, view)
                for tool in installed.tools:
                    spec = package_tool(installed, tool)
                    view.hset(self.installed(tenant), tool.name, _encode(spec))
                names = [tool.name for tool in installed.tools]
                view.set(self.package_tools(tenant, installed.package), _encode(names))
            case PackageUninstalled(package=package):
                self._forget_package(tenant, package, view)

    def _forget_package(self, tenant: str, package: str, view: View) -> None:
        """An upgrade's or uninstall's earlier tools leave the registry."""
        key = self.package_tools(tenant, package)
        raw = view.get(key)
        if raw:
            view.hdel(self.installed(tenant), *msgspec.json.decode(raw, type=list[str]))
            view.delete(key)

    def _remember_call(self, event: Event, called: ToolCalled, view: View) -> None:
        facts_key = self._facts(event.stream_id)
        raw = view.get(facts_key) if event.run_id else None
        facts = _decode_facts(raw) if raw else _RunFacts(roles=[])
        so_far = facts.counts.get(called.tool, 0)
        if raw is not None:
            facts.counts[called.tool] = so_far + 1
            view.set(facts_key, _encode(facts))
        past = PastCall(
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
        view.lpush(key, _encode(past))
        view.ltrim(key, 0, RECENT_CALLS - 1)


def package_tool(installed: PackageInstalled, tool: InstalledTool) -> ToolSpec:
    """A package tool as callers and models know it. A call to an HTTP endpoint carries its
    id as Idempotency-Key (and webhook-id), which the contract asks the server to honour, so
    it may be tried again; an MCP server is told no such key."""
    return ToolSpec(
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema,
        dangerous=tool.dangerous,
        source=f"package:{installed.package}@{installed.version}",
        idempotent=tool.endpoint.type == "http",
    )


class ToolQueries:
    """Receipts and recent calls of one tenant."""

    def __init__(self, views: ToolsProjection, redis: Any, get: Get) -> None:
        self.views = views
        self.redis = redis
        self.get = get

    async def receipt(self, tenant_id: str, receipt_id: str) -> bytes | None:
        return await self.get(self.views.receipt(tenant_id, receipt_id))

    async def receipts_of(
        self, tenant_id: str, stream_id: str, *, limit: int, cursor: str | None
    ) -> bytes:
        """A run's (or direct call's) receipts, in call order."""
        views, redis = self.views, self.redis

        async def docs(ids: list[bytes]) -> list[bytes | None]:
            return await redis.mget([views.receipt(tenant_id, i.decode()) for i in ids])  # type: ignore[no-any-return]

        return await score_page(
            redis, views.receipts_of(tenant_id, stream_id), limit=limit, cursor=cursor, docs=docs
        )

    async def recent_calls(self, tenant_id: str) -> list[PastCall]:
        raw = await self.redis.lrange(self.views.recent_calls(tenant_id), 0, -1)
        return [_decode_past(r) for r in raw]


class Registry:
    """The tools a tenant can call: the built-ins, then its installed packages' tools from
    the read model (so every process sees an install at once). Implements the core's
    ToolRegistry port."""

    def __init__(self, views: ToolsProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def get(self, tenant_id: str, name: str) -> ToolSpec | None:
        builtin = BUILTIN_TOOLS.get(name)
        if builtin is not None:
            return builtin
        raw = await self.redis.hget(self.views.installed(tenant_id), name)
        return _decode_spec(raw) if raw else None

    async def specs(self, tenant_id: str) -> list[ToolSpec]:
        installed = await self.redis.hgetall(self.views.installed(tenant_id))
        found = {spec.name: spec for spec in map(_decode_spec, installed.values())}
        found.update(BUILTIN_TOOLS)
        return [found[name] for name in sorted(found)]
