"""Direct tool calls left half done (API.md §5): a call whose `tool.started` has no receipt
after its process had all the time it could have used is settled here: run again if its
tool is safe to run again, else recorded `unknown`. A run's calls are its worker's to
settle (nome_core/runs/harness.py)."""

from __future__ import annotations

from nome_core.application import Application
from nome_core.bus import Actor
from nome_core.events import Event, Meta
from nome_core.tools.events import ToolStarted


class SettleStartedCalls:
    name = "settle-started-calls"
    types = frozenset({ToolStarted.type})

    def __init__(self, app: Application) -> None:
        self.app = app

    async def handle(self, event: Event) -> float | None:
        if event.run_id is not None:
            return None
        actor = Actor(event.tenant_id, Meta(principal="system:calls"))
        return await self.app.calls.settle(actor, event.stream_id)
