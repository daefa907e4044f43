"""A tenant's account folded from its stream: credits by grant, reservations, and which
runs wait for or hold one of its run slots."""

from __future__ import annotations

import uuid

import msgspec

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
from nome_core.events import Event

_ACCOUNT_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650005")
_QUOTA_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650008")


def account_stream_id(tenant_id: str) -> str:
    """One account stream per tenant."""
    return str(uuid.uuid5(_ACCOUNT_NAMESPACE, tenant_id))


def quota_stream_id(tenant_id: str) -> str:
    """One quota stream per tenant: a stream apart from the account's, so creating threads
    does not queue behind the tenant's runs on the ledger."""
    return str(uuid.uuid5(_QUOTA_NAMESPACE, tenant_id))


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    grant_id: str
    kind: str
    amount: int
    # What is left of it: consumption and expiry take from it.
    remaining: int
    expires_at: str | None
    granted_at: str


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    grants: tuple[Grant, ...] = ()
    granted: int = 0
    consumed: int = 0
    expired: int = 0
    # run id -> credits it holds, in the order reserved.
    reservations: dict[str, int] = {}
    # Runs their thread has admitted, waiting for a slot, oldest first; runs holding one.
    waiting: tuple[str, ...] = ()
    active: tuple[str, ...] = ()

    @property
    def balance(self) -> int:
        return self.granted - self.consumed - self.expired

    @property
    def reserved(self) -> int:
        return sum(self.reservations.values())

    @property
    def available(self) -> int:
        return self.balance - self.reserved


def spending_order(grants: tuple[Grant, ...]) -> list[int]:
    """Indexes of the grants in the order credits are taken from them: the oldest-expiring
    first, grants that never expire last, ties in the order granted."""
    return sorted(
        range(len(grants)),
        key=lambda i: (grants[i].expires_at is None, grants[i].expires_at or "", i),
    )


def _take(grants: tuple[Grant, ...], amount: int, only: str | None = None) -> tuple[Grant, ...]:
    """The grants after `amount` is taken from them in spending order (or from one grant)."""
    updated = list(grants)
    for i in spending_order(grants):
        if amount <= 0:
            break
        grant = updated[i]
        if only is not None and grant.grant_id != only:
            continue
        taken = min(grant.remaining, amount)
        updated[i] = msgspec.structs.replace(grant, remaining=grant.remaining - taken)
        amount -= taken
    return tuple(updated)


def evolve(state: AccountState | None, event: Event) -> AccountState | None:
    account = state or AccountState(tenant_id=event.tenant_id)
    match event.data:
        case CreditsGranted() as granted:
            grant = Grant(
                grant_id=granted.grant_id,
                kind=granted.kind,
                amount=granted.amount,
                remaining=granted.amount,
                expires_at=granted.expires_at,
                granted_at=event.at,
            )
            return msgspec.structs.replace(
                account, grants=(*account.grants, grant), granted=account.granted + granted.amount
            )
        case CreditsReserved(run_id=run_id, amount=amount):
            return msgspec.structs.replace(
                account, reservations={**account.reservations, run_id: amount}
            )
        case CreditsConsumed(run_id=run_id, amount=amount):
            return msgspec.structs.replace(
                account,
                grants=_take(account.grants, amount),
                consumed=account.consumed + amount,
                reservations=_without(account.reservations, run_id),
            )
        case CreditsReleased(run_id=run_id):
            return msgspec.structs.replace(
                account, reservations=_without(account.reservations, run_id)
            )
        case CreditsExpired(grant_id=grant_id, amount=amount):
            return msgspec.structs.replace(
                account,
                grants=_take(account.grants, amount, only=grant_id),
                expired=account.expired + amount,
            )
        case RunWaiting(run_id=run_id):
            return msgspec.structs.replace(account, waiting=(*account.waiting, run_id))
        case SlotTaken(run_id=run_id):
            return msgspec.structs.replace(
                account,
                waiting=tuple(r for r in account.waiting if r != run_id),
                active=(*account.active, run_id),
            )
        case SlotFreed(run_id=run_id):
            return msgspec.structs.replace(
                account,
                waiting=tuple(r for r in account.waiting if r != run_id),
                active=tuple(r for r in account.active if r != run_id),
            )
    return state


def _without(reservations: dict[str, int], run_id: str) -> dict[str, int]:
    return {r: amount for r, amount in reservations.items() if r != run_id}


class QuotaState(msgspec.Struct, frozen=True, kw_only=True):
    """How many of each limited resource the tenant has now."""

    tenant_id: str
    counts: dict[str, int] = {}

    def count(self, resource: str) -> int:
        return self.counts.get(resource, 0)


def evolve_quota(state: QuotaState | None, event: Event) -> QuotaState | None:
    quota = state or QuotaState(tenant_id=event.tenant_id)
    match event.data:
        case QuotaTaken(resource=resource):
            return msgspec.structs.replace(
                quota, counts={**quota.counts, resource: quota.count(resource) + 1}
            )
        case QuotaFreed(resource=resource):
            return msgspec.structs.replace(
                quota, counts={**quota.counts, resource: max(0, quota.count(resource) - 1)}
            )
    return state
