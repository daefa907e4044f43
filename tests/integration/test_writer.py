"""The group-commit writer on a real Postgres: many commands per transaction, conflicts kept
to the command that caused them, and Application retries that keep streams gapless."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import pytest

from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.bus import ClaimRow
from nome_core.clock import SystemClock
from nome_core.errors import StreamConflict
from nome_core.events import DomainEvent, Event, Head, Meta, seal
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadRenamed
from nome_core.threads.state import evolve
from tests.support.app import add_message, create_thread, fold, make_app, rename_thread
from tests.support.env import PG_URL

ACTOR = Actor(tenant_id_for("tenant-a"))


class GatedStore(EventStore):
    """The real store, except that an insert waits while the test holds the gate shut, and a
    rival (another process, in effect) may write first.

    Holding the writer inside one transaction lets the test line up the next batch exactly.
    """

    def __init__(self, url: str, *, schema: str | None) -> None:
        super().__init__(url, schema=schema)
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Event()
        self.rival: Callable[[Sequence[Event]], None] | None = None
        self.transactions: list[int] = []  # events per committed insert
        self.conflicts = 0

    def insert(self, events: Sequence[Event], claims: Sequence[ClaimRow] = ()) -> list[int]:
        self.inside.set()
        self.gate.wait()
        if self.rival is not None:
            self.rival(events)
        try:
            positions = super().insert(events, claims)
        except StreamConflict:
            self.conflicts += 1
            raise
        self.transactions.append(len(events))
        return positions


class Harness:
    def __init__(self, store: GatedStore) -> None:
        self.store = store
        self.writer = GroupCommitWriter(store)
        self.clock = SystemClock()
        self.app = make_app(store, self.writer, self.clock)

    def new_thread(self, title: str = "t") -> list[Event]:
        thread_id = self.clock.new_id()
        return self.on(thread_id, Head(), ThreadCreated(title=title, metadata={}))

    def on(self, thread_id: str, head: Head, *payloads: DomainEvent) -> list[Event]:
        return seal(
            payloads,
            stream_id=thread_id,
            head=head,
            tenant_id=ACTOR.tenant_id,
            thread_id=thread_id,
            run_id=None,
            meta=Meta(),
            clock=self.clock,
        )

    async def one_batch(self, commands: list[list[Event]]) -> list[Any]:
        """Append the commands so that the writer takes them as one batch; their outcomes."""
        self.store.gate.clear()
        self.store.inside.clear()
        # The writer takes this first command alone and waits inside its transaction...
        holder = asyncio.create_task(self.writer.append(self.new_thread("holder")))
        assert await asyncio.to_thread(self.store.inside.wait, 30)
        # ...while every other command queues behind it (appending submits before it awaits).
        tasks = [asyncio.create_task(self.writer.append(c)) for c in commands]
        await asyncio.sleep(0)
        self.store.gate.set()
        await holder
        return await asyncio.gather(*tasks, return_exceptions=True)


def contents(events: Iterable[Event]) -> list[str]:
    return sorted(e.data.content for e in events if isinstance(e.data, MessageAdded))


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    store = GatedStore(PG_URL, schema=settings.database_schema)
    h = Harness(store)
    h.writer.start()
    try:
        yield h
    finally:
        h.writer.stop()
        store.close()


async def test_concurrent_commands_commit_in_fewer_transactions_than_commands(
    harness: Harness,
) -> None:
    outcomes = await asyncio.gather(
        *(create_thread(harness.app, ACTOR, f"thread {i}", {}) for i in range(200))
    )

    positions = [p for o in outcomes for p in (e.position for e in o.events)]
    assert len(set(positions)) == 200
    assert harness.writer.commands == 200
    assert harness.writer.batches < harness.writer.commands
    assert len(harness.store.transactions) == harness.writer.batches
    assert harness.store.head() == max(o.position or 0 for o in outcomes)
    for outcome in outcomes[::40]:
        assert outcome.state is not None
        assert fold(harness.store, outcome.state.id, evolve, upto=1) == outcome.state


async def test_two_commands_claiming_one_stream_version_in_a_batch_let_only_the_first_win(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "contested", {})
    thread_id = created.events[0].stream_id
    head = Head(1, created.events[0].hash)
    first = harness.on(thread_id, head, MessageAdded(message_id="m1", role="user", content="a"))
    second = harness.on(thread_id, head, ThreadRenamed(title="b"))
    bystanders = [harness.new_thread(f"bystander {i}") for i in range(5)]
    batches_before = harness.writer.batches

    won, lost, *others = await harness.one_batch([first, second, *bystanders])

    assert isinstance(won, list)
    assert isinstance(lost, StreamConflict)
    assert all(isinstance(o, list) for o in others)
    # The winner and every bystander went in together, in one transaction.
    assert harness.writer.batches == batches_before + 2  # the holder's, then this one
    assert harness.writer.last_batch_size == 6
    assert harness.store.transactions[-1] == 6
    stream = harness.store.load(thread_id)
    assert [(e.seq, e.data) for e in stream] == [
        (1, ThreadCreated(title="contested", metadata={})),
        (2, first[0].data),
    ]
    for command in bystanders:
        assert [e.id for e in harness.store.load(command[0].stream_id)] == [command[0].id]


async def test_a_command_that_lost_to_the_database_does_not_fail_the_rest_of_its_batch(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "contested", {})
    thread_id = created.events[0].stream_id
    head = Head(1, created.events[0].hash)
    await harness.writer.append(harness.on(thread_id, head, ThreadRenamed(title="winner")))
    # Decided on the state before the rename: its version 2 is taken in the database.
    stale = harness.on(thread_id, head, ThreadRenamed(title="stale"))
    bystanders = [harness.new_thread(f"bystander {i}") for i in range(5)]

    outcomes = await harness.one_batch([*bystanders[:2], stale, *bystanders[2:]])

    assert isinstance(outcomes[2], StreamConflict)
    assert all(isinstance(o, list) for i, o in enumerate(outcomes) if i != 2)
    assert [e.data for e in harness.store.load(thread_id)] == [
        ThreadCreated(title="contested", metadata={}),
        ThreadRenamed(title="winner"),
    ]
    for command in bystanders:
        assert [e.id for e in harness.store.load(command[0].stream_id)] == [command[0].id]


async def test_fifty_concurrent_messages_on_one_thread_all_land_with_gapless_seqs(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "busy", {})
    thread_id = created.events[0].stream_id

    outcomes = await asyncio.gather(
        *(add_message(harness.app, ACTOR, thread_id, f"message {i}") for i in range(50))
    )

    stream = harness.store.load(thread_id)
    assert sorted(e.seq for o in outcomes for e in o.events) == list(range(2, 52))
    assert [e.seq for e in stream] == list(range(1, 52))
    assert contents(stream) == sorted(f"message {i}" for i in range(50))
    state = harness.app.threads.get(ACTOR.tenant_id, thread_id)
    assert state is not None
    assert state.message_count == 50


class Rival:
    """Another process that wins the race for a stream's next version a few times."""

    def __init__(self, harness: Harness, thread_id: str, titles: list[str]) -> None:
        self.harness = harness
        self.thread_id = thread_id
        self.titles = titles

    def __call__(self, events: Sequence[Event]) -> None:
        mine = [e for e in events if e.stream_id == self.thread_id]
        if not mine or not self.titles:
            return
        head = Head(mine[0].seq - 1, mine[0].prev_hash)
        first = self.harness.on(self.thread_id, head, ThreadRenamed(title=self.titles.pop(0)))
        EventStore.insert(self.harness.store, first)


async def test_a_command_that_loses_the_race_is_decided_again_on_the_fresh_state(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "draft", {})
    thread_id = created.events[0].stream_id
    harness.app.threads.get(
        ACTOR.tenant_id, thread_id
    )  # cached: the command starts from a state about to go stale
    harness.store.rival = Rival(harness, thread_id, ["rival 1", "rival 2", "rival 3"])

    outcome = await add_message(harness.app, ACTOR, thread_id, "mine")

    assert harness.store.conflicts == 3
    assert [e.seq for e in outcome.events] == [5]
    assert outcome.state is not None
    assert (outcome.state.title, outcome.state.message_count) == ("rival 3", 1)
    stream = harness.store.load(thread_id)
    assert [e.seq for e in stream] == [1, 2, 3, 4, 5]
    assert [e.prev_hash for e in stream[1:]] == [e.hash for e in stream[:-1]]


async def test_a_rename_that_a_rival_already_made_appends_nothing_after_its_retry(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "draft", {})
    thread_id = created.events[0].stream_id
    harness.store.rival = Rival(harness, thread_id, ["final"])

    outcome = await rename_thread(harness.app, ACTOR, thread_id, "final")

    assert harness.store.conflicts == 1
    assert outcome.events == []
    assert [e.data for e in harness.store.load(thread_id)] == [
        ThreadCreated(title="draft", metadata={}),
        ThreadRenamed(title="final"),
    ]


async def _contend(harness: Harness, schema: str | None, commands: int) -> list[Any]:
    """`commands` add_message on one thread, alternating between two processes."""
    # A second application with its own store, writer, cache and locks: another process.
    other_store = GatedStore(PG_URL, schema=schema)
    other = Harness(other_store)
    other.writer.start()
    try:
        created = await create_thread(harness.app, ACTOR, "shared", {})
        thread_id = created.events[0].stream_id
        outcomes = await asyncio.gather(
            *(
                add_message((harness if i % 2 else other).app, ACTOR, thread_id, f"message {i}")
                for i in range(commands)
            ),
            return_exceptions=True,
        )
    finally:
        other.writer.stop()
        other_store.close()
    return [thread_id, *outcomes]


async def test_two_processes_writing_one_thread_never_lose_or_duplicate_a_message(
    harness: Harness, settings: Settings
) -> None:
    thread_id, *outcomes = await _contend(harness, settings.database_schema, 50)

    landed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, StreamConflict) for o in refused)
    stream = harness.store.load(thread_id)
    assert [e.seq for e in stream] == list(range(1, len(landed) + 2))
    assert sorted(e.seq for o in landed for e in o.events) == list(range(2, len(landed) + 2))
    assert [e.prev_hash for e in stream[1:]] == [e.hash for e in stream[:-1]]
    assert contents(stream) == sorted(set(contents(e for o in landed for e in o.events)))


async def test_two_processes_writing_one_thread_all_succeed_with_gapless_seqs(
    harness: Harness, settings: Settings
) -> None:
    thread_id, *outcomes = await _contend(harness, settings.database_schema, 50)

    assert not [o for o in outcomes if isinstance(o, BaseException)]
    assert [e.seq for e in harness.store.load(thread_id)] == list(range(1, 52))


async def test_commands_on_one_stream_share_commits_instead_of_waiting_for_each_other(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "busy", {})
    thread_id = created.events[0].stream_id
    before = len(harness.store.transactions)

    await asyncio.gather(
        *(add_message(harness.app, ACTOR, thread_id, f"message {i}") for i in range(50))
    )

    # Each was decided on the state the one before it left, before that one committed.
    assert len(harness.store.transactions) - before < 50
    stream = harness.store.load(thread_id)
    assert [e.seq for e in stream] == list(range(1, 52))
    assert [e.prev_hash for e in stream[1:]] == [e.hash for e in stream[:-1]]


async def test_a_rival_winning_inside_a_chain_fails_the_rest_of_it_and_leaves_no_gap(
    harness: Harness,
) -> None:
    created = await create_thread(harness.app, ACTOR, "busy", {})
    thread_id = created.events[0].stream_id
    harness.store.rival = Rival(harness, thread_id, ["rival"])

    outcomes = await asyncio.gather(
        *(add_message(harness.app, ACTOR, thread_id, f"message {i}") for i in range(20))
    )

    assert harness.store.conflicts >= 1
    stream = harness.store.load(thread_id)
    assert [e.seq for e in stream] == list(range(1, 23))
    assert [e.prev_hash for e in stream[1:]] == [e.hash for e in stream[:-1]]
    assert contents(stream) == sorted(f"message {i}" for i in range(20))
    assert sorted(e.seq for o in outcomes for e in o.events) == sorted(
        e.seq for e in stream if isinstance(e.data, MessageAdded)
    )
