"""Account errors."""

from __future__ import annotations

from nome_core.errors import DomainError


class InsufficientCredits(DomainError):
    code = "insufficient_credits"

    def __init__(self, *, required: int, available: int) -> None:
        super().__init__(
            "the tenant has not enough credits left", required=required, available=available
        )
