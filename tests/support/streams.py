"""One stream's log in memory, for the pure tests: seal decided payloads onto it (ids, seq,
times and hashes as the bus would give them) and fold them with a context's `evolve`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from nome_core.events import Decided, Event, Meta, head_of, seal
from nome_core.tools.receipts import ReceiptStatus, ToolReceipt
from nome_core.tools.state import Call
from tests.support.fakes import StepClock

S = TypeVar("S")


class MemoryStream(Generic[S]):
    def __init__(
        self,
        evolve: Callable[[S | None, Event], S | None],
        *,
        stream_id: str,
        tenant_id: str,
        thread_id: str | None = None,
        run_id: str | None = None,
        clock: StepClock | None = None,
    ) -> None:
        self.evolve = evolve
        self.stream_id = stream_id
        self.tenant_id = tenant_id
        self.thread_id = thread_id
        self.run_id = run_id
        self.clock = clock or StepClock()
        self.events: list[Event] = []

    def append(self, drafts: Sequence[Decided]) -> list[Event]:
        new = seal(
            drafts,
            stream_id=self.stream_id,
            head=head_of(self.events),
            tenant_id=self.tenant_id,
            thread_id=self.thread_id,
            run_id=self.run_id,
            meta=Meta(),
            clock=self.clock,
        )
        self.events.extend(new)
        return new

    @property
    def state(self) -> S | None:
        state: S | None = None
        for event in self.events:
            state = self.evolve(state, event)
        return state

    def live(self) -> S:
        """The folded state, which the test knows exists."""
        state = self.state
        assert state is not None
        return state


def receipt_of(
    call: Call, status: ReceiptStatus = "ok", result: Any = None, *, receipt_id: str = "r-1"
) -> ToolReceipt:
    """A receipt for `call` as an executor would write it (hashes are not checked here)."""
    return ToolReceipt(
        id=receipt_id,
        run_id=None,
        work_item_id=call.work_item_id,
        call_id=call.call_id,
        tool=call.tool,
        status=status,
        arguments_sha256="0" * 64,
        result=result,
        result_sha256=None,
        error=None if status == "ok" else status,
        started_at="2025-01-01T00:00:00.000000Z",
        finished_at="2025-01-01T00:00:00.000000Z",
        duration_ms=0.0,
        policy_version=call.policy.version,
        approval_id=call.approval_id,
    )
