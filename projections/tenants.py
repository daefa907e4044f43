"""Tenant read model: name and plan, for bootstrap and the account routes."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.events import Event
from nome_core.tenants.events import TenantCreated
from nome_core.tenants.state import evolve
from projections.engine import Projection, View


class TenantView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    plan: str
    created_at: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TenantView).decode


class TenantsProjection(Projection):
    name = "tenants"
    types = frozenset({TenantCreated.type})

    def doc(self, tenant_id: str) -> str:
        return self.key("doc", tenant_id)

    def apply(self, event: Event, view: View) -> None:
        match event.data:
            case TenantCreated():
                state = evolve(None, event)
                assert state is not None
                tenant = TenantView(
                    id=state.id, name=state.name, plan=state.plan, created_at=state.created_at
                )
                view.set(self.doc(event.stream_id), _encode(tenant))


class TenantQueries:
    def __init__(self, views: TenantsProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def tenant(self, tenant_id: str) -> TenantView | None:
        raw = await self.redis.get(self.views.doc(tenant_id))
        return _decode(raw) if raw else None
