"""What each plan grants a tenant: entitlements, guardrails, starting credits."""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_concurrent_runs: int
    max_installs: int
    max_threads: int


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    entitlements: tuple[str, ...]
    limits: Limits
    starting_credits: int


PLANS: dict[str, Plan] = {
    "free": Plan(
        name="free",
        entitlements=("core",),
        limits=Limits(max_concurrent_runs=4, max_installs=5, max_threads=10_000),
        starting_credits=1_000,
    ),
    "pro": Plan(
        name="pro",
        entitlements=("core", "marketplace", "connectors"),
        limits=Limits(max_concurrent_runs=32, max_installs=50, max_threads=1_000_000),
        starting_credits=100_000,
    ),
}


def plan_of(name: str) -> Plan:
    return PLANS.get(name, PLANS["free"])


# Credits per 1,000 tokens by tier (API.md §6).
CREDITS_PER_1K: dict[str, int] = {"fast": 1, "standard": 2, "deep": 5}
