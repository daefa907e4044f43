"""How every command runs: load a stream, decide, append. Nothing else lives here.

Streams are cached in-process and fast-forwarded from the log before every command, so a
thread with thousands of messages is not refolded per message; a stale cache (another
process wrote) is caught by the version check on append, and the command is decided again
on fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from nome_core.clock import Clock
from nome_core.errors import StreamConflict
from nome_core.eventstore import (
    DomainEvent,
    Draft,
    Event,
    EventStore,
    Head,
    Meta,
    head_of,
    seal,
)
from nome_core.writer import GroupCommitWriter

S = TypeVar("S")
Evolve = Callable[[Any, Event], Any]


class Actor(NamedTuple):
    """Who a command runs for: their tenant, their key id and the request's metadata."""

    tenant_id: str
    meta: Meta = Meta()


class Spec(NamedTuple):
    """One stream a command reads and appends to, and the envelope references it carries."""

    stream_id: str
    evolve: Evolve
    thread_id: str | None = None
    run_id: str | None = None
    new: bool = False


class Loaded(NamedTuple, Generic[S]):
    state: S
    head: Head


class Outcome(NamedTuple, Generic[S]):
    """A command's result: the stream's new state and the events appended (with positions)."""

    state: S
    events: list[Event]

    @property
    def position(self) -> int | None:
        return self.events[-1].position if self.events else None


class CommandBus:
    """Load, decide, append: the one way every command runs."""

    def __init__(
        self,
        store: EventStore,
        writer: GroupCommitWriter,
        clock: Clock,
        *,
        cache_size: int = 10_000,
        attempts: int = 12,
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.attempts = attempts
        self._cache: OrderedDict[tuple[str, Evolve], Loaded[Any]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._locks: dict[str, _CountedLock] = {}

    # -- infrastructure ---------------------------------------------------------------

    def load(
        self, stream_id: str, evolve: Callable[[S | None, Event], S | None]
    ) -> Loaded[S | None]:
        """The stream's current state (cached, then fast-forwarded from the log)."""
        key = (stream_id, evolve)
        with self._cache_lock:
            state, head = self._cache.get(key, Loaded(None, Head()))
        events = self.store.load(stream_id, after=head.version)
        for event in events:
            state = evolve(state, event)
        loaded = Loaded(state, head_of(events, head))
        self._remember(key, loaded)
        return loaded

    def fold(
        self, stream_id: str, evolve: Callable[[S | None, Event], S | None], upto: int
    ) -> S | None:
        """The stream as it stood after event `upto` (time travel; uncached)."""
        state: S | None = None
        for event in self.store.load(stream_id, upto=upto):
            state = evolve(state, event)
        return state

    def _remember(self, key: tuple[str, Evolve], loaded: Loaded[Any]) -> None:
        with self._cache_lock:
            known = self._cache.get(key)
            if known is not None and known.head.version > loaded.head.version:
                return  # a newer state got here first
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, key: tuple[str, Evolve]) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    async def execute(
        self,
        stream_id: str,
        evolve: Callable[[S | None, Event], S | None],
        decide: Callable[[S | None], Sequence[DomainEvent | Draft]],
        actor: Actor,
        *,
        new: bool = False,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> Outcome[S | None]:
        """Load, decide, append; decide again on fresh state if another writer won."""
        spec = Spec(stream_id, evolve, thread_id=thread_id, run_id=run_id, new=new)
        (outcome,) = await self.execute_many([spec], lambda states: [decide(states[0])], actor)
        return outcome

    async def execute_many(
        self,
        specs: Sequence[Spec],
        decide: Callable[[list[Any]], Sequence[Sequence[DomainEvent | Draft]]],
        actor: Actor,
    ) -> list[Outcome[Any]]:
        """One command over several streams, appended in one transaction."""
        # Commands on one stream in this process take turns, so they never race each other;
        # only another process can make the append conflict. Locks are taken in id order.
        locks = []
        for stream_id in sorted({s.stream_id for s in specs}):
            lock = self._locks.get(stream_id)
            if lock is None:
                lock = self._locks[stream_id] = _CountedLock()
            lock.users += 1
            locks.append((stream_id, lock))
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _, lock in locks:
                    await stack.enter_async_context(lock)
                return await self._execute(specs, decide, actor)
        finally:
            for stream_id, lock in locks:
                lock.users -= 1
                if lock.users == 0:
                    del self._locks[stream_id]

    async def _execute(
        self,
        specs: Sequence[Spec],
        decide: Callable[[list[Any]], Sequence[Sequence[DomainEvent | Draft]]],
        actor: Actor,
    ) -> list[Outcome[Any]]:
        for attempt in range(self.attempts):
            loaded = [
                Loaded(None, Head())
                if spec.new and attempt == 0
                else await asyncio.to_thread(self.load, spec.stream_id, spec.evolve)
                for spec in specs
            ]
            decided = decide([item.state for item in loaded])
            sealed = [
                seal(
                    drafts,
                    stream_id=spec.stream_id,
                    head=item.head,
                    tenant_id=actor.tenant_id,
                    thread_id=spec.thread_id,
                    run_id=spec.run_id,
                    meta=actor.meta,
                    clock=self.clock,
                )
                for spec, item, drafts in zip(specs, loaded, decided, strict=True)
            ]
            flat = [event for events in sealed for event in events]
            if not flat:
                return [Outcome(item.state, []) for item in loaded]
            try:
                positions = iter(await self.writer.append(flat))
            except StreamConflict:
                for spec in specs:
                    self._forget((spec.stream_id, spec.evolve))
                if attempt + 1 == self.attempts:
                    raise
                # Randomised exponential back-off: with a fixed one the process that just won
                # keeps winning and the other one runs out of attempts.
                await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
                continue
            outcomes: list[Outcome[Any]] = []
            for spec, item, events in zip(specs, loaded, sealed, strict=True):
                recorded = [msgspec.structs.replace(e, position=next(positions)) for e in events]
                state = item.state
                for event in recorded:
                    state = spec.evolve(state, event)
                if recorded:
                    self._remember((spec.stream_id, spec.evolve), Loaded(state, head_of(recorded)))
                outcomes.append(Outcome(state, recorded))
            return outcomes
        raise AssertionError("unreachable")


class _CountedLock(asyncio.Lock):
    """A per-stream lock that knows how many commands hold or wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0
