"""Domain errors. The API maps each kind to one status and code (nome_api/errors.py)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a command can raise on purpose."""

    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class Invalid(DomainError):
    code = "validation_failed"


class StreamConflict(Conflict):
    """Another writer appended to the stream first (optimistic concurrency)."""


class Unavailable(DomainError):
    """The event store did not answer in time: the outcome of a command is unknown, and a
    retry with the same idempotency key is safe."""

    code = "unavailable"
