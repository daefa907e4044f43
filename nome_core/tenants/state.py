"""Tenant state folded from its events: its name, plan, billing state, and the platform's
changes on top of the plan."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Final, Literal, get_args

import msgspec

from nome_core.clock import format_time, parse_time
from nome_core.events import Event
from nome_core.tenants.events import (
    BillingChanged,
    EntitlementsChanged,
    LimitsChanged,
    PlanChanged,
    TenantCreated,
)
from nome_core.tenants.plans import Limits, plan_of

# Tenant ids derive from names, so two processes creating "acme" at once collide on the
# stream's first version instead of making two tenants of one name.
_TENANT_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650001")

BillingStatus = Literal["active", "past_due", "canceled"]
BILLING_STATUSES: Final[tuple[BillingStatus, ...]] = get_args(BillingStatus)


def tenant_id_for(name: str) -> str:
    return str(uuid.uuid5(_TENANT_NAMESPACE, name))


class TenantState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    plan: str
    created_at: str
    billing: str = "active"
    period_end: str | None = None
    granted: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    max_threads: int | None = None
    max_installs: int | None = None
    max_concurrent_runs: int | None = None

    @property
    def entitlements(self) -> list[str]:
        """The plan's, plus the platform's grants, less its revocations."""
        found = set(plan_of(self.plan).entitlements) | set(self.granted)
        return sorted(found - set(self.revoked))

    @property
    def limits(self) -> Limits:
        """The plan's limits, with the platform's overrides."""
        plan = plan_of(self.plan).limits
        return Limits(
            max_threads=plan.max_threads if self.max_threads is None else self.max_threads,
            max_installs=plan.max_installs if self.max_installs is None else self.max_installs,
            max_concurrent_runs=plan.max_concurrent_runs
            if self.max_concurrent_runs is None
            else self.max_concurrent_runs,
        )

    def grace_until(self, grace_days: float) -> str | None:
        """When a past-due tenant stops being able to start work."""
        if self.billing != "past_due" or self.period_end is None:
            return None
        return format_time(parse_time(self.period_end) + timedelta(days=grace_days))

    def may_start_work(self, now: str, grace_days: float) -> bool:
        """Active, or past due within its grace; never once canceled (API.md §6)."""
        if self.billing == "active":
            return True
        if self.billing == "canceled":
            return False
        until = self.grace_until(grace_days)
        return until is None or now <= until


def evolve(state: TenantState | None, event: Event) -> TenantState | None:
    match event.data:
        case TenantCreated(name=name, plan=plan):
            return TenantState(id=event.stream_id, name=name, plan=plan, created_at=event.at)
        case PlanChanged(plan=plan) if state is not None:
            return msgspec.structs.replace(state, plan=plan)
        case EntitlementsChanged(granted=granted, revoked=revoked) if state is not None:
            return msgspec.structs.replace(state, granted=tuple(granted), revoked=tuple(revoked))
        case LimitsChanged() as limits if state is not None:
            return msgspec.structs.replace(
                state,
                max_threads=limits.max_threads,
                max_installs=limits.max_installs,
                max_concurrent_runs=limits.max_concurrent_runs,
            )
        case BillingChanged(status=status, period_end=period_end) if state is not None:
            return msgspec.structs.replace(state, billing=status, period_end=period_end)
    return state
