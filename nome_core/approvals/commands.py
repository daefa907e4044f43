"""Approval commands."""

from __future__ import annotations

from typing import Literal

from nome_core.bus import Command


class ResolveApproval(Command, frozen=True, kw_only=True):
    """Answer an approval, in the stream (run or direct call) whose call waits for it."""

    approval_id: str
    stream_id: str
    run_id: str | None
    thread_id: str | None
    decision: Literal["approved", "denied", "expired"]
    reason: str | None
    # The resolver's roles: an `admin`-tier approval needs the admin role.
    roles: frozenset[str]
    receipt_id: str
    at: str
