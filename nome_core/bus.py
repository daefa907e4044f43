"""How every command runs: load its streams, decide, append. Nothing else lives here.

Streams are cached in-process and fast-forwarded from the log before every command (all of
a command's streams in one read), so a thread with thousands of messages is not refolded per
message; a stale cache (another process wrote) is caught by the version check on append, and
the command is decided again on fresh state.

A stream of another tenant is loaded as a missing one (API.md §0: another tenant's resource
is answered exactly as a missing one), so no `decide` has to check ownership.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec

from nome_core.clock import Clock
from nome_core.errors import StreamConflict
from nome_core.events import Decided, Event, Head, Meta, head_of, seal

S = TypeVar("S")
C = TypeVar("C", bound="Command")
Evolve = Callable[[Any, Event], Any]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command: what a caller asks for, with every id it needs."""


class Store(Protocol):
    """The part of the log the bus reads (nome_core/storage implements it)."""

    def load_many(self, streams: Sequence[tuple[str, int]]) -> dict[str, list[Event]]: ...


class Writer(Protocol):
    """Appends one command's events atomically; returns their positions."""

    async def append(self, events: Sequence[Event]) -> list[int]: ...


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
    # Read for the decision, never appended to: not locked, so commands that only read a
    # stream (every run of a tenant reads its account) do not take turns on it.
    read_only: bool = False


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


def owned_by(state: Any, tenant_id: str) -> Any:
    """The state if it is the tenant's (or has no tenant), else None."""
    owner = getattr(state, "tenant_id", None)
    return state if owner is None or owner == tenant_id else None


class CommandBus:
    """Load, decide, append: the one way every command runs."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
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

    def load(self, stream_id: str, evolve: Callable[[S | None, Event], S | None]) -> S | None:
        """The stream's current state, whoever owns it (workers and system jobs)."""
        (loaded,) = self._load_many([Spec(stream_id, evolve)])
        return loaded.state  # type: ignore[no-any-return]

    def _load_many(self, specs: Sequence[Spec]) -> list[Loaded[Any]]:
        """Each stream's current state: cached, then fast-forwarded from the log in one read."""
        with self._cache_lock:
            cached = [self._cache.get((s.stream_id, s.evolve), Loaded(None, Head())) for s in specs]
        fresh = self.store.load_many(
            [(s.stream_id, c.head.version) for s, c in zip(specs, cached, strict=True)]
        )
        loaded = []
        for spec, (state, head) in zip(specs, cached, strict=True):
            events = fresh.get(spec.stream_id, [])
            for event in events:
                state = spec.evolve(state, event)
            item = Loaded(state, head_of(events, head))
            self._remember((spec.stream_id, spec.evolve), item)
            loaded.append(item)
        return loaded

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
        decide: Callable[[S | None], Sequence[Decided]],
        actor: Actor,
        *,
        new: bool = False,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> Outcome[S | None]:
        """Load, decide, append one stream; decide again on fresh state if another writer won."""
        spec = Spec(stream_id, evolve, thread_id=thread_id, run_id=run_id, new=new)
        (outcome,) = await self.execute_many([spec], lambda states: [decide(states[0])], actor)
        return outcome

    async def execute_many(
        self,
        specs: Sequence[Spec],
        decide: Callable[[list[Any]], Sequence[Sequence[Decided]]],
        actor: Actor,
    ) -> list[Outcome[Any]]:
        """One command over several streams, appended in one transaction."""
        # Commands on one stream in this process take turns, so they never race each other;
        # only another process can make the append conflict. Locks are taken in id order.
        locks = []
        for stream_id in sorted({s.stream_id for s in specs if not s.read_only}):
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
        decide: Callable[[list[Any]], Sequence[Sequence[Decided]]],
        actor: Actor,
    ) -> list[Outcome[Any]]:
        for attempt in range(self.attempts):
            to_load = [s for s in specs if not (s.new and attempt == 0)]
            read = iter(await asyncio.to_thread(self._load_many, to_load) if to_load else [])
            loaded = [
                Loaded(None, Head()) if spec.new and attempt == 0 else next(read) for spec in specs
            ]
            decided = decide([owned_by(item.state, actor.tenant_id) for item in loaded])
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


class Aggregate(NamedTuple, Generic[S, C]):
    """A context whose every command touches one stream: how to fold it, decide on it, and
    which stream (and thread) a command addresses. `Handlers` runs its commands."""

    evolve: Callable[[S | None, Event], S | None]
    decide: Callable[[C, S | None], Sequence[Decided]]
    stream_of: Callable[[C], str]
    creates: Callable[[C], bool] = lambda _: False
    thread_of: Callable[[C], str | None] = lambda _: None


class Handlers(Generic[S, C]):
    """Load -> decide -> append for a one-stream context, and its state by id."""

    def __init__(self, bus: CommandBus, aggregate: Aggregate[S, C]) -> None:
        self.bus = bus
        self.aggregate = aggregate

    async def handle(self, actor: Actor, cmd: C) -> Outcome[S | None]:
        agg = self.aggregate
        return await self.bus.execute(
            agg.stream_of(cmd),
            agg.evolve,
            lambda state: agg.decide(cmd, state),
            actor,
            new=agg.creates(cmd),
            thread_id=agg.thread_of(cmd),
        )

    def get(self, tenant_id: str, stream_id: str) -> S | None:
        """The stream's state if it is the tenant's."""
        return owned_by(self.bus.load(stream_id, self.aggregate.evolve), tenant_id)  # type: ignore[no-any-return]


class _CountedLock(asyncio.Lock):
    """A per-stream lock that knows how many commands hold or wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0
