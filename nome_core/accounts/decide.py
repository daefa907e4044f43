"""Account decisions: whether a tenant may start work and has the credits for it, what a
run's end costs it, when credits expire, which waiting runs take the tenant's free run
slots, and whether one more thread or install fits its limits."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from nome_core.accounts.errors import BillingInactive, InsufficientCredits, LimitReached
from nome_core.accounts.events import (
    CreditsConsumed,
    CreditsExpired,
    CreditsGranted,
    CreditsReleased,
    CreditsReserved,
    QuotaFreed,
    QuotaTaken,
    RunWaiting,
    SlotFreed,
    SlotTaken,
)
from nome_core.accounts.state import AccountState, QuotaState, evolve, spending_order
from nome_core.events import DomainEvent, unrecorded
from nome_core.tenants.plans import CREDITS_PER_1K, MAX_RUN_COST, plan_of
from nome_core.tenants.state import TenantState

# Every run that started costs at least one credit (API.md §6).
MINIMUM_RUN_COST = 1


def starting_grant(plan: str, grant_id: str) -> list[DomainEvent]:
    """The plan's starting credits, granted when the tenant is made."""
    amount = plan_of(plan).starting_credits
    reason = f"starting credits of the {plan} plan"
    return [CreditsGranted(grant_id=grant_id, amount=amount, kind="promotional", reason=reason)]


def may_start_work(tenant: TenantState | None, now: str, grace_days: float) -> None:
    """Billing: canceled, or past due beyond its grace, starts nothing (API.md §6)."""
    if tenant is not None and not tenant.may_start_work(now, grace_days):
        raise BillingInactive(tenant.billing)


def reserve(
    account: AccountState | None, tenant: TenantState | None, *, run_id: str, tier: str
) -> list[DomainEvent]:
    """Hold the most a new run can cost. Refused, appending nothing, when the available
    balance is short."""
    required = plan_of(tenant.plan if tenant else "free").max_run_cost.get(tier, 0)
    available = account.available if account else 0
    if available < required:
        raise InsufficientCredits(required=required, available=max(0, available))
    return [CreditsReserved(run_id=run_id, amount=required)]


def cost(tier: str, tokens: int) -> int:
    """A started run's credits: its tier's price per 1,000 tokens, rounded up, at least the
    minimum, never more than the tier's maximum (what a run of it reserves)."""
    rate = CREDITS_PER_1K.get(tier, CREDITS_PER_1K["standard"])
    most = MAX_RUN_COST.get(tier, MAX_RUN_COST["standard"])
    return min(most, max(MINIMUM_RUN_COST, math.ceil(tokens * rate / 1000)))


def settle(account: AccountState | None, run_id: str, charge: int) -> list[DomainEvent]:
    """A run ended: its cost is consumed, never more than it reserved, and the rest
    released; in the commit of its end, so it is charged once. A run created before the
    ledger held reservations is charged what the balance allows."""
    if account is None:
        return []
    held = account.reservations.get(run_id)
    amount = min(charge, max(0, account.available) if held is None else held)
    events: list[DomainEvent] = []
    if amount > 0:
        events.append(CreditsConsumed(run_id=run_id, amount=amount))
    if held is not None and held - amount > 0:
        events.append(CreditsReleased(run_id=run_id, amount=held - amount))
    return events


def schedule(
    account: AccountState | None,
    tenant: TenantState | None,
    *,
    admitted: Iterable[str] = (),
    ended: Iterable[str] = (),
) -> list[DomainEvent]:
    """The tenant's run slots after runs ended (their slots freed) and runs were admitted by
    their threads (they wait, in that order): waiting runs take free slots oldest first, so
    at no instant hold more runs a slot than `max_concurrent_runs`. A run starts only once
    it holds one (the worker picks it up then)."""
    state = account or AccountState(tenant_id=tenant.id if tenant else "")
    events: list[DomainEvent] = []

    def add(event: DomainEvent) -> None:
        nonlocal state
        events.append(event)
        state = _fold(state, event)

    for run_id in ended:
        if run_id in state.active or run_id in state.waiting:
            add(SlotFreed(run_id=run_id))
    for run_id in admitted:
        if run_id not in state.active and run_id not in state.waiting:
            add(RunWaiting(run_id=run_id))
    limit = (tenant.limits if tenant else plan_of("free").limits).max_concurrent_runs
    while state.waiting and len(state.active) < limit:
        add(SlotTaken(run_id=state.waiting[0]))
    return events


def expire(account: AccountState | None, now: str) -> list[DomainEvent]:
    """Grants past their expiry lose what is left of them, except what the runs that hold
    reservations still need, so the balance never goes below zero."""
    if account is None:
        return []
    events: list[DomainEvent] = []
    spare = account.available
    for i in spending_order(account.grants):
        grant = account.grants[i]
        if grant.expires_at is None or grant.expires_at > now or grant.remaining <= 0:
            continue
        amount = min(grant.remaining, max(0, spare))
        if amount > 0:
            events.append(CreditsExpired(grant_id=grant.grant_id, amount=amount))
            spare -= amount
    return events


def grant(
    *, grant_id: str, amount: int, kind: str, expires_at: str | None, reason: str
) -> list[DomainEvent]:
    return [
        CreditsGranted(
            grant_id=grant_id, amount=amount, kind=kind, expires_at=expires_at, reason=reason
        )
    ]


def take_quota(
    quota: QuotaState | None, limit: int, *, resource: str, item_id: str
) -> list[DomainEvent]:
    """One more thread or install, unless the tenant has its limit of them already."""
    current = quota.count(resource) if quota else 0
    if current >= limit:
        raise LimitReached(resource, limit=limit, current=current)
    return [QuotaTaken(resource=resource, id=item_id)]


def thread_quota(
    tenant: TenantState | None, quota: QuotaState | None, thread_id: str
) -> list[DomainEvent]:
    """One more thread, if the tenant's `max_threads` allows it."""
    limit = (tenant.limits if tenant else plan_of("free").limits).max_threads
    return take_quota(quota, limit, resource="threads", item_id=thread_id)


def free_quota(resource: str, item_ids: Sequence[str]) -> list[DomainEvent]:
    return [QuotaFreed(resource=resource, id=item_id) for item_id in item_ids]


def _fold(state: AccountState, event: DomainEvent) -> AccountState:
    folded = evolve(state, unrecorded(event))
    assert folded is not None
    return folded
