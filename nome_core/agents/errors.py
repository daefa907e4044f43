"""Agent errors."""

from __future__ import annotations

from nome_core.errors import Conflict, NotFound


class AgentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such agent")


class DefaultAgentKept(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "the default agent runs every run that names no agent: update it instead of deleting it"
        )
