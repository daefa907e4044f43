"""Account commands."""

from __future__ import annotations

from typing import Literal

from nome_core.bus import Command


class GrantCredits(Command, frozen=True, kw_only=True):
    tenant_id: str
    grant_id: str
    amount: int
    kind: Literal["paid", "promotional"]
    expires_at: str | None
    reason: str


class ExpireCredits(Command, frozen=True, kw_only=True):
    tenant_id: str
    at: str
