"""A tool's policy for one tenant, folded from its changes; the default until changed."""

from __future__ import annotations

import uuid

from nome_core.eventstore import Event
from nome_core.tools.events import PolicyChanged
from nome_core.tools.policy import Approval, Offline, Policy

_POLICY_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650004")


def policy_stream_id(tenant_id: str, tool: str) -> str:
    """One stream per tenant and tool, so each change gets the next version."""
    return str(uuid.uuid5(_POLICY_NAMESPACE, f"{tenant_id}/{tool}"))


def evolve(state: Policy | None, event: Event) -> Policy | None:
    match event.data:
        case PolicyChanged() as changed:
            return Policy(
                tool=changed.tool,
                max_calls_per_run=changed.max_calls_per_run,
                approval=_approval(changed.approval),
                offline=_offline(changed.offline),
                allowed_roles=changed.allowed_roles,
                version=event.seq + 1,  # version 1 is the built-in default
            )
    return state


def _approval(value: str) -> Approval:
    return "admin" if value == "admin" else "required" if value == "required" else "none"


def _offline(value: str) -> Offline:
    return "queue" if value == "queue" else "skip" if value == "skip" else "fail"
