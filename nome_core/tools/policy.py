"""The per-tool policy matrix (API.md §5) and the decision it makes for one call."""

from __future__ import annotations

from typing import Literal

import msgspec

from nome_core.runs.events import PolicyDecision
from nome_core.tools.builtin import BUILTIN_TOOLS

Approval = Literal["none", "required", "admin"]
Offline = Literal["fail", "queue", "skip"]
ALL_ROLES = ["viewer", "member", "operator", "auditor", "admin"]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    tool: str
    max_calls_per_run: int | None = None
    approval: Approval = "none"
    offline: Offline = "fail"
    allowed_roles: list[str] = msgspec.field(
        default_factory=lambda: ["member", "operator", "admin"]
    )
    version: int = 1


def default_policy(tool: str) -> Policy:
    spec = BUILTIN_TOOLS.get(tool)
    if spec is not None and spec.dangerous:
        return Policy(tool=tool, approval="required", max_calls_per_run=10)
    return Policy(tool=tool)


def decide(policy: Policy, *, calls_so_far: int, creator_roles: list[str]) -> PolicyDecision:
    """Allow, ask for approval, or deny one call, and name the rule that decided."""
    version = policy.version
    if not set(creator_roles) & set(policy.allowed_roles):
        return PolicyDecision(decision="deny", rule="allowed_roles", version=version)
    if policy.max_calls_per_run is not None and calls_so_far >= policy.max_calls_per_run:
        return PolicyDecision(decision="deny", rule="max_calls_per_run", version=version)
    if policy.approval != "none":
        return PolicyDecision(
            decision="approval_required", rule=f"approval:{policy.approval}", version=version
        )
    return PolicyDecision(decision="allow", rule="policy", version=version)
