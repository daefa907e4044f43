"""Thread errors."""

from __future__ import annotations

from nome_core.errors import NotFound


class ThreadNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such thread")
