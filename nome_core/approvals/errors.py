"""Approval errors."""

from __future__ import annotations

from nome_core.errors import Conflict, Forbidden, NotFound


class ApprovalNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such approval")


class AlreadyResolved(Conflict):
    code = "already_resolved"

    def __init__(self, status: str) -> None:
        super().__init__(f"the approval is already {status}")


class AdminApprovalRequired(Forbidden):
    def __init__(self) -> None:
        super().__init__("this approval needs the admin role")
