"""Run errors."""

from __future__ import annotations

from nome_core.errors import Conflict, DomainError, NotFound


class RunNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such run")


class RunEnded(Conflict):
    def __init__(self, status: str) -> None:
        super().__init__(f"the run has already ended ({status})")


class InsufficientCredits(DomainError):
    code = "insufficient_credits"

    def __init__(self) -> None:
        super().__init__("the tenant has no credits left")
