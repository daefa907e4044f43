"""Tenant commands: the platform operator's (API.md §6)."""

from __future__ import annotations

from nome_core.bus import Command


class CreateTenant(Command, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    plan: str = "free"


class ChangePlan(Command, frozen=True, kw_only=True):
    tenant_id: str
    plan: str


class SetBilling(Command, frozen=True, kw_only=True):
    tenant_id: str
    status: str
    period_end: str | None = None


class ChangeEntitlements(Command, frozen=True, kw_only=True):
    """Grant entitlements beyond the plan, or revoke some of it (a later change of either
    kind replaces an earlier one for the same entitlement)."""

    tenant_id: str
    grant: list[str]
    revoke: list[str]


class SetLimits(Command, frozen=True, kw_only=True):
    """Override the plan's limits; a limit set to None goes back to the plan's, a limit
    not named stays as it is."""

    tenant_id: str
    changes: dict[str, int | None]


TenantCommand = CreateTenant | ChangePlan | SetBilling | ChangeEntitlements | SetLimits
