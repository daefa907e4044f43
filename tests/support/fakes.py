"""Fakes shared by the tests (fakes over mocks)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from nome_core.clock import format_time
from nome_core.tools.builtin import ToolSpec
from nome_core.tools.executor import BackendUnreachable, CallContext, ToolFailed
from nome_core.tools.state import Call


class StepClock:
    """Ids and times that advance one step per call, so every value is known in advance and
    a Hypothesis example replays exactly when it is shrunk."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._ticks = itertools.count(1)

    def now(self) -> str:
        return format_time(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._ticks)))

    def new_id(self) -> str:
        return str(uuid.UUID(int=next(self._ids)))


# Note ids the fake executor gives `thread.note` calls (the note lands in the thread).
_FAKE_NOTES = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-7465737473ff")


def fake_result(tool: str, call_id: str, arguments: Any) -> Any:
    """What `FakeExecutor` answers for a call that succeeds: known from the call alone, so a
    test's model predicts every receipt and every answer the scripted model gives."""
    if tool == "thread.note":
        return {"note_id": str(uuid.uuid5(_FAKE_NOTES, call_id))}
    return {"tool": tool, "echo": arguments}


class FakeExecutor:
    """An `Executor` that reaches nothing. A call whose arguments hold `"fail": why` fails
    (`ToolFailed(why)`), one holding `"offline": true` or of a tool in `down` finds its
    backend unreachable; any other call succeeds with `fake_result`. Every call it was asked
    to run is remembered, in order."""

    def __init__(self, *, down: Iterable[str] = ()) -> None:
        self.down = set(down)
        self.ran: list[tuple[Call, CallContext]] = []

    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        self.ran.append((call, context))
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        if call.tool in self.down or arguments.get("offline"):
            raise BackendUnreachable(f"{call.tool} is unreachable")
        if "fail" in arguments:
            raise ToolFailed(str(arguments["fail"]))
        return fake_result(call.tool, call.call_id, call.arguments)

    def runs_of(self, call_id: str) -> int:
        """How many times the call was run."""
        return sum(1 for call, _ in self.ran if call.call_id == call_id)


class HeldExecutor(FakeExecutor):
    """A `FakeExecutor` whose calls wait at a gate the test opens, counting how many run at
    the same moment: a call in progress is held exactly as long as the test needs it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0
        self.most_at_once = 0

    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.ran.append((call, context))
            await self.gate.wait()
            return fake_result(call.tool, call.call_id, call.arguments)
        finally:
            self.running -= 1
