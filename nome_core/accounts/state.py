"""A tenant's account folded from its stream: what its runs have consumed."""

from __future__ import annotations

import uuid

import msgspec

from nome_core.accounts.events import CreditsConsumed
from nome_core.accounts.plans import Plan
from nome_core.events import Event

_ACCOUNT_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650005")


def account_stream_id(tenant_id: str) -> str:
    """One account stream per tenant."""
    return str(uuid.uuid5(_ACCOUNT_NAMESPACE, tenant_id))


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    consumed: int = 0


def balance(plan: Plan, account: AccountState | None) -> int:
    """What is left of the plan's credits."""
    return plan.starting_credits - (account.consumed if account else 0)


def evolve(state: AccountState | None, event: Event) -> AccountState | None:
    match event.data:
        case CreditsConsumed(amount=amount):
            current = state or AccountState(tenant_id=event.tenant_id)
            return msgspec.structs.replace(current, consumed=current.consumed + amount)
    return state
