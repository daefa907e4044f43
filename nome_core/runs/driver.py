"""Advance one run as far as it can go now: the worker's use case. The worker owns leases
and concurrency; what happens to the run is decided here.

- A pending run whose thread is gone is cancelled, not started.
- The harness drives the run; each step is recorded against the run as last seen, so a
  cancel or another worker that got there first makes the step fail and the run is looked
  at again.
- A run that can go no further for a while (a model retry's back-off, a tool backend that
  is down under `offline: queue`, a call another worker may still be running) leaves the
  worker free: it is told when to look again.
- A model that fails a run started before harness 2 fails the run, once, as it stands (the
  harness retries and fails the others itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

from nome_core.bus import Actor
from nome_core.errors import StreamConflict
from nome_core.events import Decided
from nome_core.runs import decide
from nome_core.runs.commands import CancelRun
from nome_core.runs.errors import RunChanged, RunEnded
from nome_core.runs.handlers import RunHandlers, step_of
from nome_core.runs.harness import Harness, ModelError, Postponed
from nome_core.runs.state import RunState
from nome_core.threads import state as threads
from nome_core.tools.executor import ToolQueued


class Advanced(NamedTuple):
    """Where a run stands after a worker's turn: its state, and when to look again if it
    cannot go on before then."""

    state: RunState | None
    retry_after_s: float | None = None


class RunDriver:
    def __init__(self, runs: RunHandlers, harness: Harness) -> None:
        self.runs = runs
        self.harness = harness

    async def advance(self, actor: Actor, run_id: str) -> Advanced:
        state = await asyncio.to_thread(self.runs.get, actor.tenant_id, run_id)
        while state is not None and not state.terminal:
            try:
                return await self._step(actor, state)
            except (RunChanged, StreamConflict, RunEnded):
                # Cancelled, or another worker got there: look at the log again.
                state = await asyncio.to_thread(self.runs.get, actor.tenant_id, run_id)
        return Advanced(state)

    async def _step(self, actor: Actor, state: RunState) -> Advanced:
        if state.status == "pending" and await self._thread_gone(state):
            cancel = CancelRun(run_id=state.id, by="system", reason="the thread was deleted")
            return Advanced(await self._record(actor, state, decide.cancel(cancel, state)))
        latest = state

        async def record(seen: RunState, drafts: Sequence[Decided]) -> RunState:
            nonlocal latest
            latest = await self._record(actor, seen, drafts)
            return latest

        try:
            return Advanced(await self.harness.drive(state, record))
        except (Postponed, ToolQueued) as later:
            return Advanced(latest, later.retry_after_s)
        except ModelError as exc:
            # Fail the run as it stands now (the turn may have recorded deltas already), so
            # the failure is recorded once and the model is not asked again.
            failed = decide.fail(latest, "model_error", str(exc))
            return Advanced(await self._record(actor, latest, failed))

    async def _thread_gone(self, state: RunState) -> bool:
        thread = await asyncio.to_thread(self.runs.bus.load, state.thread_id, threads.evolve)
        return thread is None or thread.deleted

    async def _record(self, actor: Actor, seen: RunState, drafts: Sequence[Decided]) -> RunState:
        outcome = await self.runs.record(actor, step_of(seen, drafts))
        assert outcome.state is not None
        return outcome.state
