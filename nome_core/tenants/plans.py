"""Plans as data (API.md §6): what each gives a tenant — entitlements, guardrails, starting
credits and the most a run of each tier may cost. The README lists the numbers."""

from __future__ import annotations

from typing import Final, Literal, get_args

import msgspec

Entitlement = Literal["core", "marketplace", "connectors", "webhooks", "private_packages"]
ENTITLEMENTS: Final[tuple[Entitlement, ...]] = get_args(Entitlement)
PlanName = Literal["free", "pro", "enterprise"]
PLAN_NAMES: Final[tuple[PlanName, ...]] = get_args(PlanName)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_concurrent_runs: int
    max_installs: int
    max_threads: int


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    name: PlanName
    entitlements: tuple[Entitlement, ...]
    limits: Limits
    starting_credits: int
    # What a run of each tier reserves when it is created: the most it can cost.
    max_run_cost: dict[str, int]


# A run's reservation by tier (API.md §6), the same on every plan today.
MAX_RUN_COST: Final[dict[str, int]] = {"fast": 10, "standard": 20, "deep": 50}

PLANS: Final[dict[str, Plan]] = {
    "free": Plan(
        name="free",
        entitlements=("core",),
        limits=Limits(max_concurrent_runs=4, max_installs=5, max_threads=10_000),
        starting_credits=1_000,
        max_run_cost=MAX_RUN_COST,
    ),
    "pro": Plan(
        name="pro",
        entitlements=("core", "marketplace", "connectors", "webhooks"),
        limits=Limits(max_concurrent_runs=32, max_installs=50, max_threads=1_000_000),
        starting_credits=100_000,
        max_run_cost=MAX_RUN_COST,
    ),
    "enterprise": Plan(
        name="enterprise",
        entitlements=("core", "marketplace", "connectors", "webhooks", "private_packages"),
        limits=Limits(max_concurrent_runs=256, max_installs=500, max_threads=100_000_000),
        starting_credits=1_000_000,
        max_run_cost=MAX_RUN_COST,
    ),
}


def plan_of(name: str) -> Plan:
    return PLANS.get(name, PLANS["free"])


# Credits per 1,000 tokens by tier (API.md §6).
CREDITS_PER_1K: Final[dict[str, int]] = {"fast": 1, "standard": 2, "deep": 5}
