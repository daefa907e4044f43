"""Tenant (workspace) events."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("tenant.created")
class TenantCreated(DomainEvent, frozen=True, kw_only=True):
    name: str
    plan: str = "free"


@event_type("tenant.plan_changed")
class PlanChanged(DomainEvent, frozen=True, kw_only=True):
    plan: str


@event_type("tenant.entitlements_changed")
class EntitlementsChanged(DomainEvent, frozen=True, kw_only=True):
    """The platform's grants and revocations on top of the plan, as they stand now."""

    granted: list[str]
    revoked: list[str]


@event_type("tenant.limits_changed")
class LimitsChanged(DomainEvent, frozen=True, kw_only=True):
    """The platform's overrides of the plan's limits (None: the plan's)."""

    max_threads: int | None
    max_installs: int | None
    max_concurrent_runs: int | None


@event_type("billing.status_changed")
class BillingChanged(DomainEvent, frozen=True, kw_only=True):
    status: str
    period_end: str | None
