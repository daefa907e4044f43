"""Direct tool calls (`POST /v1/tools/call`): one call per stream, outside any run."""

from __future__ import annotations

import msgspec

from nome_core.eventstore import Event
from nome_core.runs.events import ToolCalled
from nome_core.runs.state import Call, evolve_calls


class DirectCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    thread_id: str | None
    calls: tuple[Call, ...] = ()

    @property
    def call(self) -> Call:
        return self.calls[0]


def evolve(state: DirectCall | None, event: Event) -> DirectCall | None:
    if state is None:
        if not isinstance(event.data, ToolCalled):
            return None
        state = DirectCall(id=event.stream_id, tenant_id=event.tenant_id, thread_id=event.thread_id)
    return msgspec.structs.replace(state, calls=evolve_calls(state.calls, event))
