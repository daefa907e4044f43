"""Running one tool call and writing its receipt. How a tool runs depends on its source
(built-in code, a package's HTTP endpoint or MCP server): each source is an `Executor`,
an adapter outside the core. What to do with the outcome is decided here, the same for
every source: a denied call never runs, an unreachable backend gets the policy's `offline`
treatment, and every call that ends gets one typed receipt."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, Protocol

import msgspec

from nome_core.clock import Clock
from nome_core.events import sha256_hex
from nome_core.tools.builtin import ArgumentsInvalid, ToolSpec
from nome_core.tools.policy import OFFLINE_RECEIPT, Policy
from nome_core.tools.receipts import ReceiptStatus, ToolReceipt
from nome_core.tools.state import Call

# Every call is bounded here, whatever runs it: a call that started longer ago than this is
# no longer running anywhere (see `STARTED_GRACE_S`).
CALL_TIMEOUT_S: Final = 30.0
# A call found started without an outcome may still be running in the worker that started
# it until its timeout; past this (the timeout and a margin for a slow or paused process),
# that worker is gone and the call can be resolved.
STARTED_GRACE_S: Final = CALL_TIMEOUT_S + 15.0


def idempotency_key(call: Call) -> str:
    """The key every attempt of one call carries to its tool: the call's id."""
    return call.call_id


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
    timeout_s: float = CALL_TIMEOUT_S,
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
            async with asyncio.timeout(timeout_s):
                result = await executor.run(spec, call, context)
        except TimeoutError:
            status, error = "error", f"the tool did not answer within {timeout_s:g} s"
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


def unfinished_receipt(
    call: Call, *, receipt_id: str, run_id: str | None, started_at: str, now: str
) -> ToolReceipt:
    """The receipt of a call that started but whose worker stopped before recording what
    happened, of a tool that cannot safely be run again: its outcome is `unknown`."""
    return ToolReceipt(
        id=receipt_id,
        run_id=run_id,
        work_item_id=call.work_item_id,
        call_id=call.call_id,
        tool=call.tool,
        status="unknown",
        arguments_sha256=sha256_hex(call.arguments),
        result=None,
        result_sha256=None,
        error=(
            "the worker running this call stopped before recording its outcome; the tool "
            "may or may not have acted, and it is not run again"
        ),
        started_at=started_at,
        finished_at=now,
        duration_ms=0.0,
        policy_version=call.policy.version,
        approval_id=call.approval_id,
    )
