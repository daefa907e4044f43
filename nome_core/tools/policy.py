"""The per-tool policy matrix (API.md §5): every decision about one tool call is made here,
and a proposed policy is simulated here against the calls it would have decided."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final, Literal, get_args

import msgspec

from nome_core.tools.builtin import BUILTIN_TOOLS
from nome_core.tools.events import PolicyDecision

Approval = Literal["none", "required", "admin"]
Offline = Literal["fail", "queue", "skip"]
APPROVALS: Final[tuple[Approval, ...]] = get_args(Approval)
OFFLINE: Final[tuple[Offline, ...]] = get_args(Offline)
# What a call that could not reach its backend becomes under each `offline` rule: a receipt
# of this status, or (queue) no receipt yet: the call waits and is tried again.
OFFLINE_RECEIPT: Final[dict[Offline, Literal["error", "skipped"] | None]] = {
    "fail": "error",
    "skip": "skipped",
    "queue": None,
}


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    tool: str
    max_calls_per_run: int | None = None
    approval: Approval = "none"
    offline: Offline = "fail"
    allowed_roles: list[str] = msgspec.field(
        default_factory=lambda: ["member", "operator", "admin"]
    )
    version: int = 1


def default_policy(tool: str, *, dangerous: bool | None = None) -> Policy:
    """Version 1 of every tool's policy: dangerous tools need an approval."""
    if dangerous is None:
        spec = BUILTIN_TOOLS.get(tool)
        dangerous = spec is not None and spec.dangerous
    if dangerous:
        return Policy(tool=tool, approval="required", max_calls_per_run=10)
    return Policy(tool=tool)


def decide_call(
    policy: Policy | None,
    *,
    calls_so_far: int,
    roles: Collection[str],
    agent_tools: Collection[str] | None = None,
) -> PolicyDecision:
    """Allow, ask for approval, or deny one call, and name the rule that decided.

    `policy` is None when the tenant has no such tool. `agent_tools` is the calling run's
    agent's tool list (None for a direct call, which names its tool itself); `roles` are the
    run creator's roles, or the direct caller's.
    """
    if policy is None:
        return PolicyDecision(decision="deny", rule="unknown_tool")
    if agent_tools is not None and policy.tool not in agent_tools:
        # The agent's tool list is what its runs may use, whatever the model asks for.
        return PolicyDecision(decision="deny", rule="agent_tools")
    version = policy.version
    if not set(roles) & set(policy.allowed_roles):
        return PolicyDecision(decision="deny", rule="allowed_roles", version=version)
    if policy.max_calls_per_run is not None and calls_so_far >= policy.max_calls_per_run:
        return PolicyDecision(decision="deny", rule="max_calls_per_run", version=version)
    if policy.approval != "none":
        return PolicyDecision(
            decision="approval_required", rule=f"approval:{policy.approval}", version=version
        )
    return PolicyDecision(decision="allow", rule="policy", version=version)


class PastCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call as it was decided, with what it was decided on."""

    call_id: str
    run_id: str | None
    tool: str
    decision: str
    # The rule that decided; calls decided before the policy matrix (an unknown tool, a tool
    # not in the run's agent) are decided the same way under any policy.
    rule: str = ""
    calls_so_far: int
    creator_roles: list[str]
    at: str


# Rules decided before the policy matrix is consulted.
BEFORE_POLICY: Final = frozenset({"unknown_tool", "agent_tools"})


class DecisionChange(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    run_id: str | None
    at: str
    before: str
    after: str
    rule: str


class Simulation(msgspec.Struct, frozen=True, kw_only=True):
    tool: str
    calls_considered: int
    changed: int
    changes: dict[str, int]
    calls: list[DecisionChange]


def simulate(proposed: Policy, past: Sequence[PastCall], *, shown: int = 200) -> Simulation:
    """What `proposed` would have decided for the tool's past run calls.

    Runs record who started them, so their calls can be decided again; direct calls were
    decided on the caller's key at the time and are left out.
    """
    mine = [
        c
        for c in past
        if c.tool == proposed.tool and c.run_id is not None and c.rule not in BEFORE_POLICY
    ]
    changes: list[DecisionChange] = []
    summary: dict[str, int] = {}
    for call in mine:
        after = decide_call(proposed, calls_so_far=call.calls_so_far, roles=call.creator_roles)
        if after.decision != call.decision:
            key = f"{call.decision} -> {after.decision}"
            summary[key] = summary.get(key, 0) + 1
            changes.append(
                DecisionChange(
                    call_id=call.call_id,
                    run_id=call.run_id,
                    at=call.at,
                    before=call.decision,
                    after=after.decision,
                    rule=after.rule,
                )
            )
    return Simulation(
        tool=proposed.tool,
        calls_considered=len(mine),
        changed=len(changes),
        changes=summary,
        calls=changes[:shown],
    )
