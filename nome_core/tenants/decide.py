"""Tenant decisions."""

from __future__ import annotations

from nome_core.bus import Aggregate
from nome_core.errors import Conflict, Invalid, NotFound
from nome_core.events import DomainEvent
from nome_core.tenants.commands import (
    ChangeEntitlements,
    ChangePlan,
    CreateTenant,
    SetBilling,
    SetLimits,
    TenantCommand,
)
from nome_core.tenants.events import (
    BillingChanged,
    EntitlementsChanged,
    LimitsChanged,
    PlanChanged,
    TenantCreated,
)
from nome_core.tenants.plans import ENTITLEMENTS, PLAN_NAMES
from nome_core.tenants.state import BILLING_STATUSES, TenantState, evolve

LIMITS = ("max_threads", "max_installs", "max_concurrent_runs")


def live(state: TenantState | None) -> TenantState:
    if state is None:
        raise NotFound("no such tenant")
    return state


def decide(cmd: TenantCommand, state: TenantState | None) -> list[DomainEvent]:
    match cmd:
        case CreateTenant(name=name, plan=plan):
            if state is not None:
                raise Conflict(f"tenant {name!r} exists")
            _check_plan(plan)
            return [TenantCreated(name=name, plan=plan)]
        case ChangePlan(plan=plan):
            _check_plan(plan)
            return [] if live(state).plan == plan else [PlanChanged(plan=plan)]
        case SetBilling(status=status, period_end=period_end):
            tenant = live(state)
            if status not in BILLING_STATUSES:
                raise Invalid(f"billing status must be one of {', '.join(BILLING_STATUSES)}")
            if (tenant.billing, tenant.period_end) == (status, period_end):
                return []
            return [BillingChanged(status=status, period_end=period_end)]
        case ChangeEntitlements(grant=grant, revoke=revoke):
            tenant = live(state)
            unknown = sorted((set(grant) | set(revoke)) - set(ENTITLEMENTS))
            if unknown:
                raise Invalid(f"unknown entitlements: {', '.join(unknown)}")
            if set(grant) & set(revoke):
                raise Invalid("an entitlement cannot be granted and revoked at once")
            granted = sorted((set(tenant.granted) - set(revoke)) | set(grant))
            revoked = sorted((set(tenant.revoked) - set(grant)) | set(revoke))
            if (granted, revoked) == (sorted(tenant.granted), sorted(tenant.revoked)):
                return []
            return [EntitlementsChanged(granted=granted, revoked=revoked)]
        case SetLimits(changes=changes):
            tenant = live(state)
            unknown = sorted(set(changes) - set(LIMITS))
            if unknown:
                raise Invalid(f"unknown limits: {', '.join(unknown)}")
            if any(v is not None and v < 0 for v in changes.values()):
                raise Invalid("a limit is a non-negative integer, or null for the plan's")
            current = {name: getattr(tenant, name) for name in LIMITS}
            wanted = {**current, **changes}
            if wanted == current:
                return []
            return [LimitsChanged(**wanted)]


def _check_plan(plan: str) -> None:
    if plan not in PLAN_NAMES:
        raise Invalid(f"plan must be one of {', '.join(PLAN_NAMES)}")


TENANTS: Aggregate[TenantState, TenantCommand] = Aggregate(
    evolve=evolve, decide=decide, stream_of=lambda cmd: cmd.tenant_id
)
