"""Tool events: policy changes (one stream per tenant and tool, each change a new version)
and the life of one call (in the stream of the run, or direct call, that made it)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nome_core.events import DomainEvent, event_type
from nome_core.tools.receipts import ToolReceipt


@event_type("policy.changed")
class PolicyChanged(DomainEvent, frozen=True, kw_only=True):
    tool: str
    max_calls_per_run: int | None
    approval: str
    offline: str
    allowed_roles: list[str]


class PolicyDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy matrix decided for one call, and the rule that decided."""

    decision: Literal["allow", "approval_required", "deny"]
    rule: str
    # The policy version that decided (API.md lists decision and rule; receipts need this).
    version: int = 0


@event_type("tool.called")
class ToolCalled(DomainEvent, frozen=True, kw_only=True):
    call_id: str
    tool: str
    arguments: Any
    policy: PolicyDecision


@event_type("tool.completed")
class ToolCompleted(DomainEvent, frozen=True, kw_only=True):
    call_id: str
    receipt: ToolReceipt
