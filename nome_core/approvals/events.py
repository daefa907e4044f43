"""Approval events. They belong to the stream of the run (or direct call) whose tool waits,
so one version check decides which of many concurrent resolutions wins."""

from __future__ import annotations

from typing import Any, Literal

from nome_core.events import DomainEvent, event_type


@event_type("approval.requested")
class ApprovalRequested(DomainEvent, frozen=True, kw_only=True):
    approval_id: str
    call_id: str
    tool: str
    arguments: Any
    tier: Literal["required", "admin"]
    expires_at: str


@event_type("approval.resolved")
class ApprovalResolved(DomainEvent, frozen=True, kw_only=True):
    approval_id: str
    decision: Literal["approved", "denied", "expired"]
    by: str | None
    reason: str | None
