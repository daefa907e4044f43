"""Tenant state folded from its events."""

from __future__ import annotations

import uuid

import msgspec

from nome_core.events import Event
from nome_core.tenants.events import TenantCreated

# Tenant ids derive from names, so two processes creating "acme" at once collide on the
# stream's first version instead of making two tenants of one name.
_TENANT_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650001")


def tenant_id_for(name: str) -> str:
    return str(uuid.uuid5(_TENANT_NAMESPACE, name))


class TenantState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    plan: str
    created_at: str


def evolve(state: TenantState | None, event: Event) -> TenantState | None:
    match event.data:
        case TenantCreated(name=name, plan=plan):
            return TenantState(id=event.stream_id, name=name, plan=plan, created_at=event.at)
    return state
