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


@event_type("tool.started")
class ToolStarted(DomainEvent, frozen=True, kw_only=True):
    """A worker is about to run the call: appended (version-checked) before any effect, so
    only the worker whose append won runs it, and a call found started without an outcome
    is known to have been left half done."""

    call_id: str
    # Sent with the call to a tool that can use it (HTTP tools: `Idempotency-Key`): the
    # call's id, so every attempt of one call carries the same key.
    idempotency_key: str
    # Whether the tool said it is safe to run again: an attempt that left no outcome is then
    # run again, otherwise its receipt says `unknown`.
    idempotent: bool = False
    attempt: int = 1


@event_type("tool.deferred")
class ToolDeferred(DomainEvent, frozen=True, kw_only=True):
    """The attempt could not reach the tool's backend (`offline: queue`), so it had no
    effect: the call is started afresh after `retry_after_s`."""

    call_id: str
    reason: str
    retry_after_s: float


@event_type("tool.completed")
class ToolCompleted(DomainEvent, frozen=True, kw_only=True):
    call_id: str
    receipt: ToolReceipt
