"""Running one tool call and writing its receipt. How a tool runs depends on its source
(built-in code, a package's HTTP endpoint or MCP server): each source is an `Executor`,
an adapter outside the core. What to do with the outcome is decided here, the same for
every source: a denied call never runs, an unreachable backend gets the policy's `offline`
treatment, and every call that ends gets one typed receipt."""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgspec

from nome_core.clock import Clock
from nome_core.events import sha256_hex
from nome_core.tools.builtin import ArgumentsInvalid, ToolSpec
from nome_core.tools.policy import OFFLINE_RECEIPT, Policy
from nome_core.tools.receipts import ReceiptStatus, ToolReceipt
from nome_core.tools.state import Call


class ToolFailed(Exception):
    """The tool ran and failed; the caller sees the message in an `error` receipt."""


class BackendUnreachable(ToolFailed):
    """The tool's backend cannot be reached; the policy's `offline` rule decides."""


class ToolQueued(Exception):
    """`offline: queue`: the call waits and is tried again once the backend may be back."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"tool backend unreachable; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a call comes from: a run, or a direct call (no run)."""

    tenant_id: str
    run_id: str | None
    thread_id: str | None


class Executor(Protocol):
    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        """The call's result (JSON-able); raises ToolFailed or BackendUnreachable."""
        ...


async def execute(
    call: Call,
    *,
    spec: ToolSpec | None,
    policy: Policy,
    context: CallContext,
    executor: Executor,
    clock: Clock,
    queue_retry_s: float = 2.0,
) -> ToolReceipt:
    """Run one call (unless its policy decision denied it) and write its receipt.
    Raises ToolQueued for an unreachable backend under `offline: queue`."""
    started, t0 = clock.now(), time.perf_counter()
    status: ReceiptStatus = "ok"
    result: Any = None
    error: str | None = None
    if call.policy.decision == "deny":
        status, error = "denied", f"denied by policy ({call.policy.rule})"
    elif spec is None:
        # Installed when the call was decided, gone since (uninstalled mid-run).
        status, error = "error", "tool_uninstalled: the tool's package is not installed"
    else:
        try:
            result = await executor.run(spec, call, context)
        except BackendUnreachable as exc:
            outcome = OFFLINE_RECEIPT[policy.offline]
            if outcome is None:
                raise ToolQueued(queue_retry_s) from exc
            status, error = outcome, str(exc)
        except (ArgumentsInvalid, ToolFailed) as exc:
            status, error = "error", str(exc)
    return ToolReceipt(
        id=clock.new_id(),
        run_id=context.run_id,
        work_item_id=call.work_item_id,
        call_id=call.call_id,
        tool=call.tool,
        status=status,
        arguments_sha256=sha256_hex(call.arguments),
        result=result,
        result_sha256=sha256_hex(result) if result is not None else None,
        error=error,
        started_at=started,
        finished_at=clock.now(),
        duration_ms=round((time.perf_counter() - t0) * 1000, 3),
        policy_version=call.policy.version,
        approval_id=call.approval_id,
    )
