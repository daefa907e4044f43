"""Tool policy events: every change of a tool's policy is one event with a new version."""

from __future__ import annotations

from nome_core.eventstore import DomainEvent, event_type


@event_type("policy.changed")
class PolicyChanged(DomainEvent, frozen=True, kw_only=True):
    tool: str
    max_calls_per_run: int | None
    approval: str
    offline: str
    allowed_roles: list[str]
