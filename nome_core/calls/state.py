"""A direct tool call (`POST /v1/tools/call`): one call per stream, outside any run."""

from __future__ import annotations

import msgspec

from nome_core.approvals.state import evolve_calls
from nome_core.events import Event
from nome_core.tools.events import ToolCalled, ToolStarted
from nome_core.tools.state import Call


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """The last time the call was started: its number, when, and whether its tool is safe to
    run again."""

    number: int
    at: str
    idempotent: bool


class DirectCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    thread_id: str | None
    calls: tuple[Call, ...] = ()
    attempt: Attempt | None = None

    @property
    def call(self) -> Call:
        return self.calls[0]

    @property
    def left_open(self) -> bool:
        """Started, without a receipt: running, or its runner died."""
        return self.attempt is not None and self.call.receipt is None


def evolve(state: DirectCall | None, event: Event) -> DirectCall | None:
    if state is None:
        # A direct call's stream starts with its call, outside any run.
        if not isinstance(event.data, ToolCalled) or event.run_id is not None:
            return None
        state = DirectCall(id=event.stream_id, tenant_id=event.tenant_id, thread_id=event.thread_id)
    if isinstance(started := event.data, ToolStarted):
        attempt = Attempt(number=started.attempt, at=event.at, idempotent=started.idempotent)
        return msgspec.structs.replace(state, attempt=attempt)
    return msgspec.structs.replace(state, calls=evolve_calls(state.calls, event))
