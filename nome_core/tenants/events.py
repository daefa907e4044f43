"""Tenant (workspace) events."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("tenant.created")
class TenantCreated(DomainEvent, frozen=True, kw_only=True):
    name: str
    plan: str = "free"
