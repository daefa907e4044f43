"""Command handlers: load a stream, decide, append. Nothing else lives here.

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

from nome_core.agents import decide as agents_decide
from nome_core.agents import state as agents_state
from nome_core.approvals import decide as approvals_decide
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
from nome_core.runs import decide as runs_decide
from nome_core.runs import scripted as runs_scripted
from nome_core.runs import state as runs_state
from nome_core.runs.effects import RunChanged, note_effects, runs_thread_effects
from nome_core.runs.events import AgentSnapshot, ToolCompleted
from nome_core.tenants import decide as tenants_decide
from nome_core.tenants import state as tenants_state
from nome_core.threads import decide as threads_decide
from nome_core.threads import state as threads_state
from nome_core.tools import calls as tool_calls
from nome_core.tools import decide as tools_decide
from nome_core.tools import state as tools_state
from nome_core.tools.builtin import BUILTIN_TOOLS
from nome_core.tools.policy import Policy, default_policy
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


class Application:
    """Every NOME command, as load -> decide -> append."""

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

    # -- tenants and keys ---------------------------------------------------------------

    async def create_tenant(
        self, name: str, actor_meta: Meta | None = None, *, plan: str = "free"
    ) -> Outcome[tenants_state.TenantState | None]:
        tenant_id = tenants_state.tenant_id_for(name)
        return await self.execute(
            tenant_id,
            tenants_state.evolve,
            lambda state: tenants_decide.create(state, name, plan),
            Actor(tenant_id, actor_meta or Meta()),
        )

    def tenant(self, tenant_id: str) -> tenants_state.TenantState | None:
        return self.load(tenant_id, tenants_state.evolve).state

    async def create_key(
        self,
        actor: Actor,
        name: str,
        roles: list[str],
        *,
        raw_key: str | None = None,
        key_id: str | None = None,
    ) -> tuple[Outcome[keys_state.KeyState | None], str]:
        """A new key of the actor's tenant; returns it with the raw key (shown once).

        With a `key_id`, the key is made at most once (start-up bootstrap from many processes).
        """
        key = raw_key or key_secrets.generate()
        events = keys_decide.create(name, roles, key_secrets.digest(key), key_secrets.hint(key))
        outcome = await self.execute(
            key_id or self.clock.new_id(),
            keys_state.evolve,
            lambda state: [] if state is not None else events,
            actor,
            new=key_id is None,
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

    # -- agents -------------------------------------------------------------------------

    async def create_agent(
        self, actor: Actor, *, agent_id: str | None = None, **config: Any
    ) -> Outcome[agents_state.AgentState | None]:
        """A new agent; with the tenant's default agent id, made at most once."""
        return await self.execute(
            agent_id or self.clock.new_id(),
            agents_state.evolve,
            lambda state: agents_decide.create(state, **config),
            actor,
            new=agent_id is None,
        )

    async def update_agent(
        self, actor: Actor, agent_id: str, **changes: Any
    ) -> Outcome[agents_state.AgentState | None]:
        return await self.execute(
            agent_id,
            agents_state.evolve,
            lambda state: agents_decide.update(state, actor.tenant_id, **changes),
            actor,
        )

    async def delete_agent(
        self, actor: Actor, agent_id: str
    ) -> Outcome[agents_state.AgentState | None]:
        return await self.execute(
            agent_id,
            agents_state.evolve,
            lambda state: agents_decide.delete(state, actor.tenant_id),
            actor,
        )

    def agent(self, agent_id: str) -> agents_state.AgentState | None:
        return self.load(agent_id, agents_state.evolve).state

    async def agent_for_run(
        self, actor: Actor, agent_id: str | None, default_provider: str
    ) -> agents_state.AgentState:
        """The run's agent: the one named, or the tenant's default (made on first use)."""
        if agent_id is not None:
            named = await asyncio.to_thread(self.agent, agent_id)
            return agents_decide.live(named, actor.tenant_id)
        default_id = agents_state.default_agent_id(actor.tenant_id)
        agent = await asyncio.to_thread(self.agent, default_id)
        if agent is None:
            outcome = await self.create_agent(
                actor,
                agent_id=default_id,
                name="default",
                instructions="You are a helpful assistant.",
                provider=default_provider,
                model=runs_scripted.MODEL if default_provider == "scripted" else "",
                tools=sorted(BUILTIN_TOOLS),
                tier="standard",
            )
            agent = outcome.state
        return agents_decide.live(agent, actor.tenant_id)

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        actor: Actor,
        *,
        thread_id: str,
        input_text: str,
        agent: agents_state.AgentState,
        tier: str | None,
        domain_hints: list[str],
        enqueue: bool,
        creator_roles: list[str],
    ) -> Outcome[runs_state.RunState | None]:
        """A pending run, its user message in the thread, and its place on the thread."""
        run_id, message_id = self.clock.new_id(), self.clock.new_id()
        run_tier = tier or agent.tier
        snapshot = AgentSnapshot(
            provider=agent.provider,
            model=agent.model,
            instructions=agent.instructions,
            tools=agent.tools,
        )

        def decide(states: list[Any]) -> list[list[DomainEvent]]:
            thread = states[0]
            thread_events = threads_decide.add_message(
                thread,
                actor.tenant_id,
                message_id=message_id,
                role="user",
                content=input_text,
                client=actor.meta.client,
                domain_hints=domain_hints,
                tier=run_tier,
                episode_id=run_id,
            ) + threads_decide.start_run(thread, actor.tenant_id, run_id, enqueue=enqueue)
            run_events = runs_decide.create(
                input_text=input_text,
                agent_id=agent.id,
                tier=run_tier,
                domain_hints=domain_hints,
                client=actor.meta.client,
                agent=snapshot,
                creator_roles=creator_roles,
            )
            return [thread_events, run_events]

        _, run = await self.execute_many(
            [
                Spec(thread_id, threads_state.evolve, thread_id=thread_id),
                Spec(run_id, runs_state.evolve, thread_id=thread_id, run_id=run_id, new=True),
            ],
            decide,
            actor,
        )
        return run

    def run(self, run_id: str) -> runs_state.RunState | None:
        return self.load(run_id, runs_state.evolve).state

    async def record_run(
        self, actor: Actor, seen: runs_state.RunState, drafts: Sequence[DomainEvent | Draft]
    ) -> Outcome[runs_state.RunState | None]:
        """Append a worker's step to a run, with what it means for the thread: assistant
        messages and notes appear there, and a run's end frees the thread. Refused if the
        run moved on since the worker looked (a cancel, or another worker)."""

        def decide(states: list[Any]) -> list[list[DomainEvent | Draft]]:
            run, thread = states
            if run is None or run.event_count != seen.event_count:
                raise RunChanged()
            effects: list[DomainEvent | Draft] = [
                *runs_thread_effects(run, thread, drafts, actor.tenant_id)
            ]
            return [list(drafts), effects]

        run, _ = await self.execute_many(
            [
                Spec(seen.id, runs_state.evolve, thread_id=seen.thread_id, run_id=seen.id),
                Spec(seen.thread_id, threads_state.evolve, thread_id=seen.thread_id),
            ],
            decide,
            actor,
        )
        return run

    async def cancel_run(
        self, actor: Actor, run_id: str, *, by: str | None, reason: str | None
    ) -> Outcome[runs_state.RunState | None]:
        run = await asyncio.to_thread(self.run, run_id)
        run = runs_decide.live(run, actor.tenant_id)
        cancel = runs_decide.cancel(run, actor.tenant_id, by, reason)
        if not cancel:
            return Outcome(run, [])
        return await self.record_run(actor, run, cancel)

    # -- tool policies, direct calls, approvals -----------------------------------------

    def policy(self, tenant_id: str, tool: str) -> Policy:
        """The tool's effective policy for the tenant: its latest change, or the default."""
        stream = tools_state.policy_stream_id(tenant_id, tool)
        return self.load(stream, tools_state.evolve).state or default_policy(tool)

    async def set_policy(self, actor: Actor, proposed: Policy) -> Outcome[Policy | None]:
        stream = tools_state.policy_stream_id(actor.tenant_id, proposed.tool)

        def decide(state: Policy | None) -> list[DomainEvent]:
            return tools_decide.change(state or default_policy(proposed.tool), proposed)

        outcome = await self.execute(stream, tools_state.evolve, decide, actor)
        state = outcome.state or default_policy(proposed.tool)
        return Outcome(state, outcome.events)

    async def record_direct_call(
        self,
        actor: Actor,
        call_id: str,
        thread_id: str | None,
        drafts: Sequence[DomainEvent | Draft],
    ) -> Outcome[tool_calls.DirectCall | None]:
        """A direct call's events; a `thread.note` lands in its thread in the same commit."""
        return await self.record_call_step(actor, call_id, thread_id, drafts, new=True)

    async def record_call_step(
        self,
        actor: Actor,
        call_id: str,
        thread_id: str | None,
        drafts: Sequence[DomainEvent | Draft],
        *,
        new: bool = False,
    ) -> Outcome[tool_calls.DirectCall | None]:
        specs = [Spec(call_id, tool_calls.evolve, thread_id=thread_id, new=new)]
        if thread_id is not None:
            specs.append(Spec(thread_id, threads_state.evolve, thread_id=thread_id))

        def decide(states: list[Any]) -> list[list[DomainEvent | Draft]]:
            decided: list[list[DomainEvent | Draft]] = [list(drafts)]
            if thread_id is None:
                return decided
            thread = states[1]
            live = thread is not None and not thread.deleted and thread.tenant_id == actor.tenant_id
            folded = states[0]
            for draft in drafts:
                folded = tool_calls.evolve(folded, _as_event(draft))
            effects: list[DomainEvent | Draft] = []
            for draft in drafts:
                data = draft.data if isinstance(draft, Draft) else draft
                if live and folded is not None and isinstance(data, ToolCompleted):
                    effects.extend(note_effects(folded.calls, data, episode_id=None))
            decided.append(effects)
            return decided

        outcome, *_ = await self.execute_many(specs, decide, actor)
        return outcome

    async def resolve_approval(
        self,
        actor: Actor,
        *,
        stream_id: str,
        run_id: str | None,
        thread_id: str | None,
        approval_id: str,
        decision: str,
        reason: str | None,
        roles: frozenset[str],
    ) -> Outcome[Any]:
        """Approve, deny or expire an approval; the first resolution wins, the rest get 409."""
        evolve = runs_state.evolve if run_id is not None else tool_calls.evolve
        receipt_id = self.clock.new_id()

        def decide(state: Any) -> list[DomainEvent | Draft]:
            return approvals_decide.resolve(
                state,
                actor.tenant_id,
                approval_id,
                decision=decision,
                by=actor.meta.principal,
                reason=reason,
                roles=roles,
                receipt_id=receipt_id,
                now=self.clock.now(),
                run_id=run_id,
            )

        return await self.execute(
            stream_id, evolve, decide, actor, thread_id=thread_id, run_id=run_id
        )

    def direct_call(self, call_id: str) -> tool_calls.DirectCall | None:
        return self.load(call_id, tool_calls.evolve).state


class _CountedLock(asyncio.Lock):
    """A per-stream lock that knows how many commands hold or wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0


def _as_event(draft: DomainEvent | Draft) -> Event:
    """A draft as an unrecorded event, to fold ahead of appending (no ids are read)."""
    data, work_item = (
        (draft.data, draft.work_item_id) if isinstance(draft, Draft) else (draft, None)
    )
    return Event(
        id="",
        type=data.type,
        tenant_id="",
        stream_id="",
        thread_id=None,
        run_id=None,
        work_item_id=work_item,
        seq=0,
        at="",
        data=data,
        hash="",
        prev_hash=None,
        meta=Meta(),
    )
