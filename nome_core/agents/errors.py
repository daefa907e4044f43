"""Agent errors."""

from __future__ import annotations

from nome_core.errors import NotFound


class AgentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such agent")
