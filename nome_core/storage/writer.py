"""Group commit: the events of many concurrent commands go into one transaction.

The recorder locks the events table for every insert so positions commit in order; one
event per transaction therefore caps out at a few hundred per second. One writer thread
takes whatever commands are waiting (up to `max_batch`) and inserts them together. A
conflict in one command must not fail the others, so a batch that hits a version conflict
is retried command by command (likewise a batch in which an idempotency key was used
already), and two commands of one batch that claim the same stream version are told apart
before the database sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from nome_core.bus import ClaimRow, ClaimTaken
from nome_core.errors import StreamConflict
from nome_core.events import Event
from nome_core.storage.store import EventStore


class Submission:
    """One command's events on their way to the log.

    A command may be decided on the state another one left before that one committed (the
    next reservation of a busy account, say): it is submitted `after` it, and fails if it
    fails, so a stream never gets an event whose predecessor is not there.
    """

    __slots__ = ("_future", "_loop", "after", "claim", "events", "failed")

    def __init__(
        self,
        events: Sequence[Event],
        claim: ClaimRow | None,
        after: Sequence[Submission],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.events = events
        self.claim = claim
        self.after = after
        self._loop = loop
        self._future: asyncio.Future[list[int]] = loop.create_future()
        # Set in the writer's thread the moment the outcome is known, so a dependent in
        # the same batch already sees it.
        self.failed = False

    async def positions(self) -> list[int]:
        """The events' positions once committed; raises StreamConflict, ClaimTaken or the
        store's error."""
        return await self._future

    def abandoned(self) -> bool:
        """The caller stopped waiting (it answered 503 while the database stalled): its
        events are not appended after all."""
        return self._future.cancelled()

    def resolve(self, outcome: list[int] | BaseException) -> None:
        self.failed = isinstance(outcome, BaseException)
        # The caller's loop may have closed while it waited (shutdown); nobody to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, self._future, outcome)


class GroupCommitWriter:
    """A thread that appends commands' events to the store, many per transaction."""

    def __init__(self, store: EventStore, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._listeners: list[Callable[[int], None]] = []
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.commands = 0
        self.events = 0
        self.last_batch_size = 0

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call `listener(last_position)` after every commit (in-process projector wake-up)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nome-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(
        self,
        events: Sequence[Event],
        claim: ClaimRow | None = None,
        after: Sequence[Submission] = (),
    ) -> Submission:
        """Queue one command's events (and its idempotency claim), from async code, to be
        appended after the submissions it was decided on."""
        if self._thread is None:
            raise RuntimeError("the writer is not running")
        submission = Submission(events, claim, after, asyncio.get_running_loop())
        self._queue.put(submission)
        return submission

    async def append(self, events: Sequence[Event], claim: ClaimRow | None = None) -> list[int]:
        """Append one command's events; returns their positions."""
        return await self.submit(events, claim).positions()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            try:
                self._commit(batch)
            except BaseException as exc:  # never let the thread die: every caller would hang
                for command in batch:
                    with contextlib.suppress(Exception):
                        command.resolve(exc)

    def _commit(self, batch: list[Submission]) -> None:
        claimed: set[tuple[str, int]] = set()
        accepted: list[Submission] = []
        for command in batch:
            if not command.events:
                command.resolve([])
                continue
            if command.abandoned():
                command.failed = True
                continue
            if any(before.failed for before in command.after):
                command.resolve(StreamConflict("a command it was decided after failed"))
                continue
            keys = {(e.stream_id, e.seq) for e in command.events}
            if keys & claimed:
                command.resolve(StreamConflict("the stream was changed by another command"))
                continue
            claimed |= keys
            accepted.append(command)
        if not accepted:
            return
        try:
            positions = self.store.insert(
                [e for c in accepted for e in c.events],
                [c.claim for c in accepted if c.claim is not None],
            )
        except (StreamConflict, ClaimTaken) as exc:
            if len(accepted) == 1:
                accepted[0].resolve(exc)
            else:
                # One by one, in order: a command decided after one that fails fails too.
                for command in accepted:
                    self._commit([command])
            return
        except Exception as exc:  # the database is down or refused: every caller hears it
            for command in accepted:
                command.resolve(exc)
            return
        self.batches += 1
        self.commands += len(accepted)
        self.events += len(positions)
        self.last_batch_size = len(accepted)
        offset = 0
        for command in accepted:
            count = len(command.events)
            command.resolve(positions[offset : offset + count])
            offset += count
        for listener in self._listeners:
            listener(positions[-1])


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
