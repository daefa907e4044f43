"""Tool policy commands."""

from __future__ import annotations

from nome_core.errors import Invalid
from nome_core.eventstore import DomainEvent
from nome_core.keys.roles import ROLES
from nome_core.tools.events import PolicyChanged
from nome_core.tools.policy import Policy


def change(current: Policy, proposed: Policy) -> list[DomainEvent]:
    if proposed.max_calls_per_run is not None and proposed.max_calls_per_run < 0:
        raise Invalid("max_calls_per_run must be null or a non-negative integer")
    unknown = sorted(set(proposed.allowed_roles) - set(ROLES))
    if unknown:
        raise Invalid(f"unknown roles: {', '.join(unknown)}")
    same = (
        current.max_calls_per_run,
        current.approval,
        current.offline,
        sorted(current.allowed_roles),
    ) == (
        proposed.max_calls_per_run,
        proposed.approval,
        proposed.offline,
        sorted(proposed.allowed_roles),
    )
    if same:
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
