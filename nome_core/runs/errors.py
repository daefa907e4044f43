"""Run errors."""

from __future__ import annotations

from nome_core.errors import Conflict, NotFound


class RunNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such run")


class RunEnded(Conflict):
    def __init__(self, status: str) -> None:
        super().__init__(f"the run has already ended ({status})")


class RunChanged(Conflict):
    """The run moved on since the worker read it; it must look again."""

    def __init__(self) -> None:
        super().__init__("the run changed since it was read")
