"""Command handlers: load a stream, decide, append. Nothing else lives here.

Streams are cached in-process and fast-forwarded from the log before every command, so a
thread with thousands of messages is not refolded per message; a stale cache (another
process wrote) is caught by the version check on append, and the command is decided again
on fresh state.
"""

from __future__ import annotations

import asyncio
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
from nome_core.keys import decide as keys_decide
from nome_core.keys import secrets as key_secrets
from nome_core.keys import state as keys_state
from nome_core.tenants import decide as tenants_decide
from nome_core.tenants import state as tenants_state
from nome_core.threads import decide as threads_decide
from nome_core.threads import state as threads_state
from nome_core.writer import GroupCommitWriter

S = TypeVar("S")
Evolve = Callable[[Any, Event], Any]


class Actor(NamedTuple):
    """Who a command runs for: their tenant, their key id and the request's metadata."""

    tenant_id: str
    meta: Meta = Meta()


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


class Application:
    """Every NOME command, as load -> decide -> append."""

    def __init__(
        self,
        store: EventStore,
        writer: GroupCommitWriter,
        clock: Clock,
        *,
        cache_size: int = 10_000,
        attempts: int = 8,
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
        # Commands on one stream in this process take turns, so they never race each other;
        # only another process can make the append conflict.
        lock = self._locks.get(stream_id)
        if lock is None:
            lock = self._locks[stream_id] = _CountedLock()
        lock.users += 1
        try:
            async with lock:
                return await self._execute(
                    stream_id, evolve, decide, actor, new=new, thread_id=thread_id, run_id=run_id
                )
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[stream_id]

    async def _execute(
        self,
        stream_id: str,
        evolve: Callable[[S | None, Event], S | None],
        decide: Callable[[S | None], Sequence[DomainEvent | Draft]],
        actor: Actor,
        *,
        new: bool,
        thread_id: str | None,
        run_id: str | None,
    ) -> Outcome[S | None]:
        for attempt in range(self.attempts):
            if new and attempt == 0:
                loaded: Loaded[S | None] = Loaded(None, Head())
            else:
                loaded = await asyncio.to_thread(self.load, stream_id, evolve)
            drafts = decide(loaded.state)
            if not drafts:
                return Outcome(loaded.state, [])
            events = seal(
                drafts,
                stream_id=stream_id,
                head=loaded.head,
                tenant_id=actor.tenant_id,
                thread_id=thread_id,
                run_id=run_id,
                meta=actor.meta,
                clock=self.clock,
            )
            try:
                positions = await self.writer.append(events)
            except StreamConflict:
                self._forget((stream_id, evolve))
                if attempt + 1 == self.attempts:
                    raise
                await asyncio.sleep(0.001 * (attempt + 1))
                continue
            recorded = [
                msgspec.structs.replace(e, position=p)
                for e, p in zip(events, positions, strict=True)
            ]
            state = loaded.state
            for event in recorded:
                state = evolve(state, event)
            self._remember((stream_id, evolve), Loaded(state, head_of(recorded)))
            return Outcome(state, recorded)
        raise AssertionError("unreachable")

    # -- tenants and keys ---------------------------------------------------------------

    async def create_tenant(
        self, name: str, actor_meta: Meta = Meta(), *, plan: str = "free"
    ) -> Outcome[tenants_state.TenantState | None]:
        tenant_id = tenants_state.tenant_id_for(name)
        return await self.execute(
            tenant_id,
            tenants_state.evolve,
            lambda state: tenants_decide.create(state, name, plan),
            Actor(tenant_id, actor_meta),
        )

    def tenant(self, tenant_id: str) -> tenants_state.TenantState | None:
        return self.load(tenant_id, tenants_state.evolve).state

    async def create_key(
        self, actor: Actor, name: str, roles: list[str], *, raw_key: str | None = None
    ) -> tuple[Outcome[keys_state.KeyState | None], str]:
        """A new key of the actor's tenant; returns it with the raw key (shown once)."""
        key = raw_key or key_secrets.generate()
        events = keys_decide.create(name, roles, key_secrets.digest(key), key_secrets.hint(key))
        outcome = await self.execute(
            self.clock.new_id(), keys_state.evolve, lambda _: events, actor, new=True
        )
        return outcome, key

    async def revoke_key(self, actor: Actor, key_id: str) -> Outcome[keys_state.KeyState | None]:
        return await self.execute(
            key_id,
            keys_state.evolve,
            lambda state: keys_decide.revoke(state, actor.tenant_id),
            actor,
        )

    # -- threads ------------------------------------------------------------------------

    async def create_thread(
        self, actor: Actor, title: str, metadata: dict[str, str]
    ) -> Outcome[threads_state.ThreadState | None]:
        thread_id = self.clock.new_id()
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda _: threads_decide.create(title, metadata),
            actor,
            new=True,
            thread_id=thread_id,
        )

    async def rename_thread(
        self, actor: Actor, thread_id: str, title: str
    ) -> Outcome[threads_state.ThreadState | None]:
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.rename(state, actor.tenant_id, title),
            actor,
            thread_id=thread_id,
        )

    async def delete_thread(
        self, actor: Actor, thread_id: str
    ) -> Outcome[threads_state.ThreadState | None]:
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.delete(state, actor.tenant_id),
            actor,
            thread_id=thread_id,
        )

    async def add_message(
        self, actor: Actor, thread_id: str, **message: Any
    ) -> Outcome[threads_state.ThreadState | None]:
        message_id = self.clock.new_id()
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.add_message(
                state, actor.tenant_id, message_id=message_id, **message
            ),
            actor,
            thread_id=thread_id,
        )

    def thread(self, thread_id: str) -> threads_state.ThreadState | None:
        return self.load(thread_id, threads_state.evolve).state


class _CountedLock(asyncio.Lock):
    """A per-stream lock that knows how many commands hold or wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0
