"""The typed receipt every tool call leaves (API.md §5)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nome_core.events import sha256_hex

# `unknown` extends API.md §5: the call started but its worker stopped before recording the
# outcome, and the tool cannot safely be run again, so whether it took effect is not known.
ReceiptStatus = Literal["ok", "error", "denied", "skipped", "queued", "unknown"]


class ToolReceipt(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    run_id: str | None
    work_item_id: str | None
    call_id: str
    tool: str
    status: ReceiptStatus
    arguments_sha256: str
    result: Any
    result_sha256: str | None
    error: str | None
    started_at: str
    finished_at: str
    duration_ms: float
    policy_version: int
    approval_id: str | None = None


def denied_receipt(
    *,
    receipt_id: str,
    run_id: str | None,
    call: Any,
    error: str,
    now: str,
    approval_id: str | None = None,
    policy_version: int = 0,
    status: ReceiptStatus = "denied",
) -> ToolReceipt:
    """A receipt for a call that did not run (refused, expired or skipped)."""
    return ToolReceipt(
        id=receipt_id,
        run_id=run_id,
        work_item_id=call.work_item_id,
        call_id=call.call_id,
        tool=call.tool,
        status=status,
        arguments_sha256=sha256_hex(call.arguments),
        result=None,
        result_sha256=None,
        error=error,
        started_at=now,
        finished_at=now,
        duration_ms=0.0,
        policy_version=policy_version,
        approval_id=approval_id,
    )
