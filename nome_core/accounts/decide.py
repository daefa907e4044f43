"""Account decisions: whether a tenant may start work, and what a run's end costs it."""

from __future__ import annotations

import math

from nome_core.accounts.errors import InsufficientCredits
from nome_core.accounts.events import CreditsConsumed
from nome_core.accounts.plans import CREDITS_PER_1K, Plan
from nome_core.accounts.state import AccountState, balance
from nome_core.events import DomainEvent

# Every run costs at least one credit (API.md §6).
MINIMUM_RUN_COST = 1


def check_credits(plan: Plan, account: AccountState | None) -> None:
    """A run needs at least the least a run can cost."""
    available = balance(plan, account)
    if available < MINIMUM_RUN_COST:
        raise InsufficientCredits(required=MINIMUM_RUN_COST, available=max(0, available))


def cost(tier: str, tokens: int) -> int:
    """A run's credits: its tier's price per 1,000 tokens, rounded up, at least the minimum."""
    rate = CREDITS_PER_1K.get(tier, CREDITS_PER_1K["standard"])
    return max(MINIMUM_RUN_COST, math.ceil(tokens * rate / 1000))


def consume(run_id: str, amount: int) -> list[DomainEvent]:
    return [CreditsConsumed(run_id=run_id, amount=amount)] if amount > 0 else []
