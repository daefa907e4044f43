"""Tool policy decisions: a change is recorded only when it changes something."""

from __future__ import annotations

from nome_core.bus import Aggregate
from nome_core.errors import Invalid
from nome_core.events import DomainEvent
from nome_core.tools.commands import SetPolicy, ToolCommand
from nome_core.tools.events import PolicyChanged
from nome_core.tools.policy import Policy, default_policy
from nome_core.tools.state import evolve, policy_stream_id
from nome_core.values import ROLES


def decide(cmd: ToolCommand, state: Policy | None) -> list[DomainEvent]:
    match cmd:
        case SetPolicy(policy=proposed):
            current = state or default_policy(proposed.tool, dangerous=cmd.dangerous)
            if proposed.max_calls_per_run is not None and proposed.max_calls_per_run < 0:
                raise Invalid("max_calls_per_run must be null or a non-negative integer")
            unknown = sorted(set(proposed.allowed_roles) - set(ROLES))
            if unknown:
                raise Invalid(f"unknown roles: {', '.join(unknown)}")
            if _settings(current) == _settings(proposed):
                return []
            return [
                PolicyChanged(
                    tool=current.tool,
                    max_calls_per_run=proposed.max_calls_per_run,
                    approval=proposed.approval,
                    offline=proposed.offline,
                    allowed_roles=sorted(set(proposed.allowed_roles)),
                )
            ]


def _settings(policy: Policy) -> tuple[object, ...]:
    return (
        policy.max_calls_per_run,
        policy.approval,
        policy.offline,
        sorted(set(policy.allowed_roles)),
    )


POLICIES: Aggregate[Policy, ToolCommand] = Aggregate(
    evolve=evolve,
    decide=decide,
    stream_of=lambda cmd: policy_stream_id(cmd.tenant_id, cmd.policy.tool),
)
