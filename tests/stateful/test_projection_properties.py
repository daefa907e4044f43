"""Read models on a real Redis: disposable (a rebuild gives the same bytes) and exactly once.

Each example writes a random history of tenant, key and thread commands through the
Application into its own SQLite log, projects it into its own Redis key prefix, and compares
the read models key by key (strings byte for byte, hashes field by field, sorted sets member
by member with their scores).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nome_core.application import Actor, Application
from nome_core.errors import DomainError
from nome_core.eventstore import EventStore, to_event
from nome_core.tenants.state import tenant_id_for
from nome_core.writer import GroupCommitWriter
from projections.engine import ProjectionRunner
from projections.registry import ReadModels
from tests.conftest import REDIS_URL, unique
from tests.fakes import StepClock

TENANT_NAMES = ("acme", "globex")

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- histories ---------------------------------------------------------------------------

tenant_index = st.integers(0, len(TENANT_NAMES) - 1)
pick = st.integers(0, 50)  # which existing key or thread, modulo how many there are
text = st.sampled_from(["Plans", "Grüße 👋", ""]) | st.text(max_size=8)

operations = st.one_of(
    st.tuples(st.just("tenant"), tenant_index),
    st.tuples(st.just("key"), tenant_index, st.sampled_from([["admin"], ["viewer", "member"]])),
    st.tuples(st.just("revoke"), pick),
    st.tuples(st.just("thread"), tenant_index, text),
    st.tuples(st.just("rename"), pick, text),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("message"), pick, text),
    st.tuples(st.just("message"), pick, text),
    # Project what is in the log so far, so views are also built while history is written.
    st.tuples(st.just("project")),
)
histories = st.lists(operations, max_size=30)


class World:
    """One example's log, writer, application, Redis prefix and projector."""

    def __init__(self, directory: str, client: redis.Redis, prefix: str, page: int) -> None:
        self.store = EventStore(f"sqlite:///{directory}/events.db")
        self.writer = GroupCommitWriter(self.store)
        self.writer.start()
        self.app = Application(self.store, self.writer, StepClock())
        self.client = client
        self.prefix = prefix
        self.read_models = ReadModels(prefix)
        self.names = [p.name for p in self.read_models.all]
        self.runner = self.new_runner(page)
        self.keys: list[tuple[str, str]] = []
        self.threads: list[tuple[str, str]] = []

    def new_runner(self, page: int) -> ProjectionRunner:
        return ProjectionRunner(
            self.store, self.client, self.read_models.all, prefix=self.prefix, page=page
        )

    def close(self) -> None:
        self.writer.stop()
        self.store.close()

    def write(self, history: list[tuple[Any, ...]]) -> None:
        asyncio.run(self._write(history))

    async def _write(self, history: list[tuple[Any, ...]]) -> None:
        for operation in history:
            with suppress(DomainError):  # refused commands are part of a realistic history
                await self._do(*operation)

    async def _do(self, kind: str, *args: Any) -> None:
        app = self.app
        match kind, args:
            case "tenant", (t,):
                await app.create_tenant(TENANT_NAMES[t])
            case "key", (t, roles):
                tenant = tenant_id_for(TENANT_NAMES[t])
                outcome, _ = await app.create_key(Actor(tenant), "key", roles)
                assert outcome.state is not None
                self.keys.append((tenant, outcome.state.id))
            case "revoke", (i,) if self.keys:
                tenant, key_id = self.keys[i % len(self.keys)]
                await app.revoke_key(Actor(tenant), key_id)
            case "thread", (t, title):
                tenant = tenant_id_for(TENANT_NAMES[t])
                created = await app.create_thread(Actor(tenant), title, {"n": title})
                assert created.state is not None
                self.threads.append((tenant, created.state.id))
            case "rename", (i, title) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await app.rename_thread(Actor(tenant), thread_id, title)
            case "delete", (i,) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await app.delete_thread(Actor(tenant), thread_id)
            case "message", (i, content) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await app.add_message(Actor(tenant), thread_id, role="user", content=content)
            case "project", ():
                self.runner.step()

    def rebuild_all(self) -> None:
        for name in self.names:
            self.runner.request_rebuild(name)
        self.runner.catch_up()

    def positions(self) -> dict[str, int]:
        return self.runner.positions(self.names)


@contextmanager
def world(page: int = 500) -> Iterator[World]:
    directory = tempfile.mkdtemp(prefix="nome-proj-")
    prefix = unique("prop") + ":"
    client = redis.Redis.from_url(REDIS_URL)
    w = World(directory, client, prefix, page)
    try:
        yield w
    finally:
        w.close()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()
        shutil.rmtree(directory, ignore_errors=True)


def dump(client: redis.Redis, prefix: str) -> dict[str, tuple[str, Any]]:
    """Every read-model key under the prefix with its contents, independent of encoding."""
    contents: dict[str, tuple[str, Any]] = {}
    for key in client.scan_iter(match=prefix + "v:*", count=1000):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} at {key!r}")
        contents[key.decode()[len(prefix) :]] = (kind, value)
    return contents


class Batch(NamedTuple):
    """What one `step` applied: the positions it started from and the head it read up to."""

    before: dict[str, int]
    head: int


def catch_up_recording(w: World) -> list[Batch]:
    batches: list[Batch] = []
    while True:
        before, head = w.positions(), w.store.head()
        moved = w.runner.step()
        if moved:
            batches.append(Batch(before, head))
        elif w.runner.caught_up():
            return batches


def redeliver(w: World, runner: ProjectionRunner, batch: Batch) -> int:
    """Hand the projections an old batch again, from their old positions: first the whole
    batch at once, then each projection's part on its own. Returns how many parts there were."""
    behind = [p for p in w.read_models.all if batch.before[p.name] < batch.head]
    if not behind:
        return 0
    rows = w.store.read(min(batch.before[p.name] for p in behind), w.runner.page, upto=batch.head)
    events = [to_event(r.state, r.position) for r in rows]
    last = rows[-1].position
    parts = [
        (p, batch.before[p.name], [e for e in events if (e.position or 0) > batch.before[p.name]])
        for p in behind
        if batch.before[p.name] < last
    ]
    runner._commit(parts, last, batch.head)
    for part in parts:
        runner._commit([part], last, batch.head)
    return len(parts)


# -- properties --------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(history=histories, page=st.integers(1, 8))
def test_rebuilding_the_read_models_twice_gives_the_same_redis_contents(
    history: list[tuple[Any, ...]], page: int
) -> None:
    with world(page) as w:
        w.write(history)
        w.runner.catch_up()
        built = dump(w.client, w.prefix)

        w.rebuild_all()
        first = dump(w.client, w.prefix)
        w.rebuild_all()
        second = dump(w.client, w.prefix)

        assert first == built
        assert second == first
        assert set(w.positions().values()) <= {w.store.head()}


@PROPERTY_SETTINGS
@given(history=histories, data=st.data())
def test_a_redelivered_batch_changes_nothing(
    history: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    with world(page=3) as w:
        w.write(history)
        batches = catch_up_recording(w)
        before, positions = dump(w.client, w.prefix), w.positions()
        assume(batches)

        batch = data.draw(st.sampled_from(batches), label="redelivered batch")
        assert redeliver(w, w.runner, batch) > 0

        assert dump(w.client, w.prefix) == before
        assert w.positions() == positions


@PROPERTY_SETTINGS
@given(history=histories, data=st.data())
def test_a_second_runner_redelivering_an_applied_batch_changes_nothing(
    history: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    with world(page=3) as w:
        w.write(history)
        batches = catch_up_recording(w)
        before, positions = dump(w.client, w.prefix), w.positions()

        # While the first runner holds the leases, a second one does nothing at all.
        second = w.new_runner(page=3)
        assert second.step() == 0
        if batches:
            redeliver(w, second, data.draw(st.sampled_from(batches), label="batch"))
        assert dump(w.client, w.prefix) == before

        # The leases expire (the first runner died); the second takes over and is at the head.
        for name in w.names:
            w.client.delete(w.runner.tracking.lease(name))
        assert second.step() == 0
        if batches:
            redeliver(w, second, data.draw(st.sampled_from(batches), label="batch"))

        assert dump(w.client, w.prefix) == before
        assert w.positions() == positions


@PROPERTY_SETTINGS
@given(
    earlier=histories,
    later=histories,
    rebuilt=st.sampled_from([p.name for p in ReadModels("").all]),
    page=st.integers(1, 5),
)
def test_rebuilding_one_read_model_leaves_the_others_applying_each_event_once(
    earlier: list[tuple[Any, ...]],
    later: list[tuple[Any, ...]],
    rebuilt: str,
    page: int,
) -> None:
    with world(page) as w:
        w.write(earlier)
        w.runner.catch_up()
        # More history arrives, and one read model is rebuilt while the others are behind.
        w.write([op for op in later if op[0] != "project"])
        w.runner.request_rebuild(rebuilt)
        w.runner.catch_up()
        incremental = dump(w.client, w.prefix)

        w.rebuild_all()

        assert incremental == dump(w.client, w.prefix)
