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
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec

from nome_core.clock import Clock
from nome_core.errors import Conflict, StreamConflict, Unavailable
from nome_core.events import Decided, Event, Head, Meta, head_of, seal

S = TypeVar("S")
T = TypeVar("T")
C = TypeVar("C", bound="Command")
Evolve = Callable[[Any, Event], Any]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command: what a caller asks for, with every id it needs."""


class Claim(NamedTuple):
    """A client's idempotency key on one command (API.md §0). It is committed with the
    command's events, so the command takes effect at most once per key whatever crashes or
    retries happen; a second command with the same key fails with `ClaimTaken`."""

    key_sha256: str
    # What the request was (method, path, body): the same key with another body is refused.
    fingerprint: str
    # What the first answer needs that the log cannot give back (a new key's raw value),
    # encrypted by whoever makes the claim; never part of an event.
    sealed: bytes | None = None


class Claimed(NamedTuple):
    """A claim as the store holds it: what it was for, and where its command's result is."""

    fingerprint: str
    stream_id: str
    version: int
    sealed: bytes | None


class ClaimRow(NamedTuple):
    """A claim with its tenant and the stream and version its command's result is at."""

    tenant_id: str
    claim: Claim
    stream_id: str
    version: int


class ClaimTaken(Conflict):
    """The idempotency key was used for a command already (within its 24 h)."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used already")


class Store(Protocol):
    """The part of the log the bus reads (nome_core/storage implements it)."""

    def load_many(self, streams: Sequence[tuple[str, int]]) -> dict[str, list[Event]]: ...


class Submission(Protocol):
    """One command's events on their way to the log (storage/writer.py)."""

    failed: bool

    async def positions(self) -> list[int]:
        """The events' positions once committed; raises StreamConflict or ClaimTaken."""
        ...


class Writer(Protocol):
    """Appends each command's events atomically (with its claim, if any), in the order
    submitted; a command submitted `after` others fails if one of them does."""

    def submit(
        self,
        events: Sequence[Event],
        claim: ClaimRow | None = None,
        after: Sequence[Any] = (),
    ) -> Submission: ...


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


class _Tip(NamedTuple):
    """A stream as the last command submitted on it left it, before its commit: the next
    command on the stream decides on this rather than wait for that commit."""

    loaded: Loaded[Any]
    submission: Submission


class _Prepared(NamedTuple):
    """A command decided, sealed and submitted, waiting for its commit."""

    specs: Sequence[Spec]
    sealed: list[list[Event]]
    states: list[Any]
    submission: Submission


class Outcome(NamedTuple, Generic[S]):
    """A command's result: the stream's new state and the events appended (with positions),
    and the position of the command's last event, on any stream."""

    state: S
    events: list[Event]
    committed: int | None = None

    @property
    def position(self) -> int | None:
        """What a reader must reach to see the whole command: the commit's last event."""
        if self.committed is not None:
            return self.committed
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
        timeout_s: float = 5.0,
        read_only_max_age_s: float = 1.0,
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.attempts = attempts
        # How long a read or an append may take before the command gives up (the database
        # is down or stalled): the caller hears so in seconds, not minutes.
        self.timeout_s = timeout_s
        # A stream a command only reads (a tenant's plan and limits, read by every thread
        # and run it makes) is served from the cache for this long after it was read or
        # written here, rather than read from the log per command: a change made by another
        # process takes effect here within it. Streams a command appends to are always
        # current, by the version check.
        self.read_only_max_age_s = read_only_max_age_s
        self._cache: OrderedDict[tuple[str, Evolve], Loaded[Any]] = OrderedDict()
        # When each cached stream was last known current (monotonic seconds).
        self._known_at: dict[tuple[str, Evolve], float] = {}
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._locks: dict[str, _CountedLock] = {}
        self._tips: dict[tuple[str, Evolve], _Tip] = {}

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

    def _recent(self, key: tuple[str, Evolve]) -> Loaded[Any] | None:
        """The cached stream, if it was known current less than `read_only_max_age_s` ago."""
        with self._cache_lock:
            known_at = self._known_at.get(key)
            if known_at is None or time.monotonic() - known_at >= self.read_only_max_age_s:
                return None
            return self._cache.get(key)

    def _remember(self, key: tuple[str, Evolve], loaded: Loaded[Any]) -> None:
        with self._cache_lock:
            known = self._cache.get(key)
            if known is not None and known.head.version > loaded.head.version:
                return  # a newer state got here first
            self._cache[key] = loaded
            self._known_at[key] = time.monotonic()
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                evicted, _ = self._cache.popitem(last=False)
                self._known_at.pop(evicted, None)

    def _forget(self, key: tuple[str, Evolve]) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)
            self._known_at.pop(key, None)

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
        claim: Claim | None = None,
    ) -> Outcome[S | None]:
        """Load, decide, append one stream; decide again on fresh state if another writer won."""
        spec = Spec(stream_id, evolve, thread_id=thread_id, run_id=run_id, new=new)
        (outcome,) = await self.execute_many(
            [spec], lambda states: [decide(states[0])], actor, claim=claim
        )
        return outcome

    async def execute_many(
        self,
        specs: Sequence[Spec],
        decide: Callable[[list[Any]], Sequence[Sequence[Decided]]],
        actor: Actor,
        *,
        claim: Claim | None = None,
    ) -> list[Outcome[Any]]:
        """One command over several streams, appended in one transaction (with its claim,
        which points at the first spec's stream: the command's result). Decided again on
        fresh state if another writer got there first."""
        for attempt in range(self.attempts):
            # Commands on one stream in this process take turns to decide, so they never
            # race each other: only another process can make an append conflict. The turn
            # ends once the command is submitted, not committed: the next command decides
            # on the state this one leaves and goes into the same commit, or the next.
            first = attempt == 0
            # What no pending command of this process holds is read before the turn, so
            # commands queued on a busy stream (a tenant's account) read in parallel
            # instead of one by one while holding it.
            ahead = await self._read_ahead(specs, first=first)
            async with self._turn(specs):
                prepared = await self._prepare(
                    specs, decide, actor, claim, first=first, ahead=ahead
                )
            if isinstance(prepared, list):
                return prepared  # decided nothing to append
            try:
                positions = await self._io(prepared.submission.positions())
            except StreamConflict:
                self._drop(prepared)
                if attempt + 1 == self.attempts:
                    raise
                # Randomised exponential back-off: with a fixed one the process that just won
                # keeps winning and the other one runs out of attempts.
                await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
                continue
            except BaseException:
                self._drop(prepared)
                raise
            return self._settle(prepared, positions)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _turn(self, specs: Sequence[Spec]) -> AsyncIterator[None]:
        """This process's turn on the streams a command appends to (in id order)."""
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
                yield
        finally:
            for stream_id, lock in locks:
                lock.users -= 1
                if lock.users == 0:
                    del self._locks[stream_id]

    def _live_tips(self, specs: Sequence[Spec]) -> list[_Tip | None]:
        """Each stream's pending tip, unless its command failed."""
        tips = [self._tips.get((s.stream_id, s.evolve)) for s in specs]
        return [tip if tip is not None and not tip.submission.failed else None for tip in tips]

    async def _read_ahead(
        self, specs: Sequence[Spec], *, first: bool
    ) -> dict[tuple[str, Evolve], Loaded[Any]]:
        """The streams no pending command holds, read now (a new one needs no read; one the
        command only reads, from the cache while it is recent)."""
        ahead: dict[tuple[str, Evolve], Loaded[Any]] = {}
        to_read = []
        for spec, tip in zip(specs, self._live_tips(specs), strict=True):
            if tip is not None or (spec.new and first):
                continue
            key = (spec.stream_id, spec.evolve)
            recent = self._recent(key) if spec.read_only else None
            if recent is not None:
                ahead[key] = recent
            else:
                to_read.append(spec)
        if to_read:
            read = await self._io(asyncio.to_thread(self._load_many, to_read))
            ahead.update({(s.stream_id, s.evolve): i for s, i in zip(to_read, read, strict=True)})
        return ahead

    def _newest(self, spec: Spec, ahead: Loaded[Any]) -> Loaded[Any]:
        """A stream read ahead, or what a command of this process committed on it since."""
        with self._cache_lock:
            cached = self._cache.get((spec.stream_id, spec.evolve))
        if cached is not None and cached.head.version > ahead.head.version:
            return cached
        return ahead

    async def _prepare(
        self,
        specs: Sequence[Spec],
        decide: Callable[[list[Any]], Sequence[Sequence[Decided]]],
        actor: Actor,
        claim: Claim | None,
        *,
        first: bool,
        ahead: dict[tuple[str, Evolve], Loaded[Any]],
    ) -> _Prepared | list[Outcome[Any]]:
        """Load, decide, seal and submit; the outcomes at once if nothing is to append.
        A stream read ahead is not read again: another process's append since is caught by
        the version check, like any stale state."""
        live = self._live_tips(specs)
        to_load = [
            spec
            for spec, tip in zip(specs, live, strict=True)
            if tip is None
            and not (spec.new and first)
            and (spec.stream_id, spec.evolve) not in ahead
        ]
        read = iter(await self._io(asyncio.to_thread(self._load_many, to_load)) if to_load else [])
        loaded: list[Loaded[Any]] = [
            tip.loaded
            if tip is not None
            else Loaded(None, Head())
            if spec.new and first
            else self._newest(spec, ahead[spec.stream_id, spec.evolve])
            if (spec.stream_id, spec.evolve) in ahead
            else next(read)
            for spec, tip in zip(specs, live, strict=True)
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
        assert all(not events for spec, events in zip(specs, sealed, strict=True) if spec.read_only)
        row = None
        if claim is not None:
            version = head_of(sealed[0], loaded[0].head).version
            row = ClaimRow(actor.tenant_id, claim, specs[0].stream_id, version)
        after = [tip.submission for tip in live if tip is not None]
        submission = self.writer.submit(flat, row, after)
        states = []
        for spec, item, events in zip(specs, loaded, sealed, strict=True):
            state = item.state
            for event in events:
                state = spec.evolve(state, event)
            states.append(state)
            if events:
                self._tips[(spec.stream_id, spec.evolve)] = _Tip(
                    Loaded(state, head_of(events)), submission
                )
        return _Prepared(specs, sealed, states, submission)

    def _settle(self, prepared: _Prepared, positions: list[int]) -> list[Outcome[Any]]:
        """The committed command's outcomes; its states become the cached ones."""
        at = iter(positions)
        committed = max(positions) if positions else None
        outcomes: list[Outcome[Any]] = []
        for spec, events, state in zip(
            prepared.specs, prepared.sealed, prepared.states, strict=True
        ):
            recorded = [msgspec.structs.replace(e, position=next(at)) for e in events]
            key = (spec.stream_id, spec.evolve)
            if recorded:
                self._remember(key, Loaded(state, head_of(recorded)))
                self._untip(key, prepared.submission)
            outcomes.append(Outcome(state, recorded, committed))
        return outcomes

    def _drop(self, prepared: _Prepared) -> None:
        """A command that did not commit: what this process knows of its streams is stale."""
        for spec in prepared.specs:
            key = (spec.stream_id, spec.evolve)
            self._forget(key)
            self._untip(key, prepared.submission)

    def _untip(self, key: tuple[str, Evolve], submission: Submission) -> None:
        # Only this command's tip: a later command's (decided after it) stays.
        tip = self._tips.get(key)
        if tip is not None and tip.submission is submission:
            del self._tips[key]

    async def _io(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await work
        except TimeoutError:
            raise Unavailable("the event store did not answer in time") from None


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

    async def handle(
        self, actor: Actor, cmd: C, *, claim: Claim | None = None
    ) -> Outcome[S | None]:
        agg = self.aggregate
        return await self.bus.execute(
            agg.stream_of(cmd),
            agg.evolve,
            lambda state: agg.decide(cmd, state),
            actor,
            new=agg.creates(cmd),
            thread_id=agg.thread_of(cmd),
            claim=claim,
        )

    def get(self, tenant_id: str, stream_id: str) -> S | None:
        """The stream's state if it is the tenant's."""
        return owned_by(self.bus.load(stream_id, self.aggregate.evolve), tenant_id)  # type: ignore[no-any-return]


class _CountedLock(asyncio.Lock):
    """A per-stream lock that knows how many commands hold or wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0
