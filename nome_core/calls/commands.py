"""Direct call commands."""

from __future__ import annotations

from typing import Any

from nome_core.bus import Command


class CallTool(Command, frozen=True, kw_only=True):
    """Call one tool outside any run, as the caller (their roles decide under the policy)."""

    call_id: str
    work_item_id: str
    tool: str
    arguments: dict[str, Any]
    thread_id: str | None
    roles: frozenset[str]
