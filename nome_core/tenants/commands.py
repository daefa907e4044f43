"""Tenant commands."""

from __future__ import annotations

from nome_core.bus import Command


class CreateTenant(Command, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    plan: str = "free"


TenantCommand = CreateTenant
