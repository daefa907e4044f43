"""Tenant read model: each tenant as the domain folds it (plan, billing state, the platform's
grants and overrides), listed oldest first for the platform operator; the views add what
follows from the plan and the billing grace."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.events import Event
from nome_core.tenants.events import (
    BillingChanged,
    EntitlementsChanged,
    LimitsChanged,
    PlanChanged,
    TenantCreated,
)
from nome_core.tenants.plans import Limits
from nome_core.tenants.state import TenantState, evolve
from projections.engine import Projection, View
from projections.paging import MEMBER_CURSOR, decode_cursor, encode_cursor, member_id, page_json


class BillingView(msgspec.Struct, kw_only=True):
    status: str
    period_end: str | None
    grace_until: str | None


class TenantView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    plan: str
    billing: BillingView
    entitlements: list[str]
    limits: Limits
    created_at: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TenantState).decode


def tenant_view(tenant: TenantState, grace_days: float) -> TenantView:
    return TenantView(
        id=tenant.id,
        name=tenant.name,
        plan=tenant.plan,
        billing=BillingView(
            status=tenant.billing,
            period_end=tenant.period_end,
            grace_until=tenant.grace_until(grace_days),
        ),
        entitlements=tenant.entitlements,
        limits=tenant.limits,
        created_at=tenant.created_at,
    )


class TenantsProjection(Projection):
    name = "tenants"
    types = frozenset(
        {
            TenantCreated.type,
            PlanChanged.type,
            EntitlementsChanged.type,
            LimitsChanged.type,
            BillingChanged.type,
        }
    )

    def doc(self, tenant_id: str) -> str:
        return self.key("doc", tenant_id)

    def index(self) -> str:
        """Every tenant, `<created_at>|<id>`: the platform's list, oldest first."""
        return self.key("idx")

    def apply(self, event: Event, view: View) -> None:
        raw = view.get(self.doc(event.stream_id))
        tenant = evolve(_decode(raw) if raw else None, event)
        if tenant is None:
            return
        view.set(self.doc(event.stream_id), _encode(tenant))
        if isinstance(event.data, TenantCreated):
            view.zadd(self.index(), 0, f"{tenant.created_at}|{tenant.id}")


class TenantQueries:
    def __init__(self, views: TenantsProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def state(self, tenant_id: str) -> TenantState | None:
        raw = await self.redis.get(self.views.doc(tenant_id))
        return _decode(raw) if raw else None

    async def tenant(self, tenant_id: str, grace_days: float) -> TenantView | None:
        state = await self.state(tenant_id)
        return tenant_view(state, grace_days) if state else None

    async def page(self, *, limit: int, cursor: str | None, grace_days: float) -> bytes:
        after = decode_cursor(cursor, MEMBER_CURSOR)
        index = self.views.index()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
        pipe.zcard(index)
        members, total = await pipe.execute()
        page = members[:limit]
        raws = await self.redis.mget([self.views.doc(member_id(m)) for m in page]) if page else []
        docs = [_encode(tenant_view(_decode(raw), grace_days)) for raw in raws if raw]
        more = len(members) > limit and page
        return page_json(docs, encode_cursor(page[-1].decode()) if more else None, total)
