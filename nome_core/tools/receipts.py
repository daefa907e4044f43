"""The typed receipt every tool call leaves (API.md §5)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ReceiptStatus = Literal["ok", "error", "denied", "skipped", "queued"]


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
