"""Tenant read model: name and plan, for bootstrap and the account routes."""

from __future__ import annotations

import msgspec

from nome_core.eventstore import Event
from nome_core.tenants.events import TenantCreated
from projections.engine import Projection, View


class TenantView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    plan: str
    created_at: str


_encode = msgspec.json.Encoder().encode


class TenantsProjection(Projection):
    name = "tenants"
    types = frozenset({TenantCreated.type})

    def doc(self, tenant_id: str) -> str:
        return self.key("doc", tenant_id)

    def apply(self, event: Event, view: View) -> None:
        match event.data:
            case TenantCreated(name=name, plan=plan):
                tenant = TenantView(id=event.stream_id, name=name, plan=plan, created_at=event.at)
                view.set(self.doc(event.stream_id), _encode(tenant))
