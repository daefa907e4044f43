"""Direct call decisions: the fence before a call's effect."""

from __future__ import annotations

from nome_core.calls.state import DirectCall
from nome_core.events import Decided, Draft
from nome_core.tools.events import ToolStarted
from nome_core.tools.executor import idempotency_key
from nome_core.tools.state import Call


def start(call: Call, state: DirectCall | None, *, attempt: int, idempotent: bool) -> list[Decided]:
    """`tool.started` for this attempt, appended (version-checked) before the tool runs: only
    the process whose append won runs it. None when the call has its receipt already or this
    attempt was started by someone else."""
    current = state.attempt.number if state is not None and state.attempt else 0
    if state is not None and (state.call.receipt is not None or current >= attempt):
        return []
    started = ToolStarted(
        call_id=call.call_id,
        idempotency_key=idempotency_key(call),
        idempotent=idempotent,
        attempt=attempt,
    )
    return [Draft(started, call.work_item_id)]
