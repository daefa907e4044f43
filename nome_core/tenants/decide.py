"""Tenant commands."""

from __future__ import annotations

from nome_core.errors import Conflict
from nome_core.eventstore import DomainEvent
from nome_core.tenants.events import TenantCreated
from nome_core.tenants.state import TenantState


def create(state: TenantState | None, name: str, plan: str = "free") -> list[DomainEvent]:
    if state is not None:
        raise Conflict(f"tenant {name!r} exists")
    return [TenantCreated(name=name, plan=plan)]
