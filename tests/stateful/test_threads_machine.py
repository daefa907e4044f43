"""Threads through the Application against a real store: the log folds to the model.

Commands go through `Application` (load, decide, group-commit writer) into a SQLite event
store; the model is a plain dict. After every step, each thread folded from the log equals the
model, whether it is folded uncached (`Application.fold`), from a second store opened on the
same file, or taken from the application's cache.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from nome_core.accounts.state import evolve_quota, quota_stream_id
from nome_core.application import Actor
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.errors import ThreadNotFound
from nome_core.threads.state import ThreadState, evolve
from tests.support.app import (
    add_message,
    create_thread,
    delete_thread,
    fold,
    make_app,
    rename_thread,
)
from tests.support.fakes import StepClock

TENANTS = (tenant_id_for("tenant-a"), tenant_id_for("tenant-b"))
titles = st.sampled_from(["Plans", "Roadmap", "Grüße 👋"]) | st.text(max_size=12)
metadata = st.dictionaries(st.sampled_from(["project", "owner", "ключ"]), st.text(max_size=6))


def modelled(state: ThreadState | None) -> dict[str, Any] | None:
    """The part of a thread's state that the model predicts (times come from the clock)."""
    if state is None:
        return None
    return {
        "tenant_id": state.tenant_id,
        "title": state.title,
        "metadata": state.metadata,
        "message_count": state.message_count,
        "deleted": state.deleted,
    }


class ThreadsMachine(RuleBasedStateMachine):
    threads = Bundle("threads")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="nome-threads-")
        self.url = f"sqlite:///{self.directory}/events.db"
        self.store = EventStore(self.url)
        self.writer = GroupCommitWriter(self.store)
        self.writer.start()
        self.app = make_app(self.store, self.writer, StepClock())
        self.loop = asyncio.new_event_loop()
        # thread id -> modelled state, and its stream version (the number of its events).
        self.model: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        # thread id -> modelled state after each version, for time travel.
        self.history: dict[str, list[dict[str, Any]]] = {}
        # Events of the tenants' quota streams: each creation and deletion counts there.
        self.quota_events = 0

    def teardown(self) -> None:
        self.writer.stop()
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def run(self, command: Any) -> Any:
        return self.loop.run_until_complete(command)

    def live(self, thread_id: str, tenant_id: str) -> bool:
        thread = self.model[thread_id]
        return thread["tenant_id"] == tenant_id and not thread["deleted"]

    def record(self, thread_id: str, appended: int) -> None:
        self.versions[thread_id] += appended
        if appended:
            self.history[thread_id].append(dict(self.model[thread_id]))

    # -- commands --------------------------------------------------------------------------

    @initialize(target=threads, title=titles, meta=metadata)
    def create_a_first_thread(self, title: str, meta: dict[str, str]) -> str:
        return self.create(TENANTS[0], title, meta)

    @rule(
        target=threads,
        tenant=st.sampled_from(TENANTS),
        title=titles,
        meta=metadata,
    )
    def create_thread(self, tenant: str, title: str, meta: dict[str, str]) -> str:
        return self.create(tenant, title, meta)

    def create(self, tenant: str, title: str, meta: dict[str, str]) -> str:
        outcome = self.run(create_thread(self.app, Actor(tenant), title, meta))
        assert isinstance(outcome.state, ThreadState)
        thread_id = outcome.state.id
        assert thread_id not in self.model
        self.model[thread_id] = {
            "tenant_id": tenant,
            "title": title,
            "metadata": meta,
            "message_count": 0,
            "deleted": False,
        }
        self.versions[thread_id] = 0
        self.history[thread_id] = []
        self.record(thread_id, len(outcome.events))
        self.quota_events += 1
        return thread_id

    @rule(thread=threads, tenant=st.sampled_from(TENANTS), title=titles)
    def rename(self, thread: str, tenant: str, title: str) -> None:
        self._rename(thread, tenant, title)

    @precondition(lambda self: bool(self.model))
    @rule(thread=threads)
    def rename_to_the_current_title(self, thread: str) -> None:
        self._rename(thread, self.model[thread]["tenant_id"], self.model[thread]["title"])

    def _rename(self, thread: str, tenant: str, title: str) -> None:
        if not self.live(thread, tenant):
            self._expect_not_found(rename_thread(self.app, Actor(tenant), thread, title))
            return
        unchanged = self.model[thread]["title"] == title
        outcome = self.run(rename_thread(self.app, Actor(tenant), thread, title))
        assert len(outcome.events) == (0 if unchanged else 1)
        self.model[thread]["title"] = title
        self.record(thread, len(outcome.events))

    @rule(thread=threads, tenant=st.sampled_from(TENANTS), content=st.text(max_size=20))
    def add_message(self, thread: str, tenant: str, content: str) -> None:
        command = add_message(self.app, Actor(tenant), thread, content)
        if not self.live(thread, tenant):
            self._expect_not_found(command)
            return
        outcome = self.run(command)
        assert [e.seq for e in outcome.events] == [self.versions[thread] + 1]
        self.model[thread]["message_count"] += 1
        self.record(thread, 1)

    # Deleting takes the thread out of the bundle most of the time, but not always: commands
    # on deleted threads must keep answering "not found".
    @rule(thread=consumes(threads), tenant=st.sampled_from(TENANTS))
    def delete_and_forget(self, thread: str, tenant: str) -> None:
        self._delete(thread, tenant)

    @rule(thread=threads, tenant=st.sampled_from(TENANTS))
    def delete(self, thread: str, tenant: str) -> None:
        self._delete(thread, tenant)

    def _delete(self, thread: str, tenant: str) -> None:
        if not self.live(thread, tenant):
            self._expect_not_found(delete_thread(self.app, Actor(tenant), thread))
            return
        outcome = self.run(delete_thread(self.app, Actor(tenant), thread))
        assert len(outcome.events) == 1
        self.model[thread]["deleted"] = True
        self.record(thread, 1)
        self.quota_events += 1

    @rule(tenant=st.sampled_from(TENANTS), title=titles)
    def rename_a_thread_that_never_existed(self, tenant: str, title: str) -> None:
        self._expect_not_found(rename_thread(self.app, Actor(tenant), str(uuid.uuid4()), title))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def travel_back_in_time(self, data: st.DataObject) -> None:
        thread = data.draw(st.sampled_from(sorted(self.model)))
        version = data.draw(st.integers(1, self.versions[thread]))
        then = fold(self.store, thread, evolve, upto=version)

        assert modelled(then) == self.history[thread][version - 1]

    def _expect_not_found(self, command: Any) -> None:
        head = self.store.head()
        try:
            self.run(command)
        except ThreadNotFound:
            pass
        else:
            raise AssertionError("expected ThreadNotFound")
        assert self.store.head() == head, "a refused command appended events"

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def every_thread_folded_from_the_log_equals_the_model(self) -> None:
        fresh = EventStore(self.url, create_table=False)
        try:
            for thread, expected in self.model.items():
                events = fresh.load(thread)
                replayed: ThreadState | None = None
                for event in events:
                    replayed = evolve(replayed, event)
                folded = fold(self.store, thread, evolve, upto=self.versions[thread])
                cached = self.app.bus.load(thread, evolve)

                assert [e.seq for e in events] == list(range(1, self.versions[thread] + 1))
                assert modelled(replayed) == expected
                assert folded == replayed
                assert cached == replayed
                assert replayed is not None
                assert (replayed.created_at, replayed.updated_at) == (events[0].at, events[-1].at)
        finally:
            fresh.close()

    @invariant()
    def the_log_holds_exactly_the_events_of_the_modelled_threads(self) -> None:
        assert self.store.head() == sum(self.versions.values()) + self.quota_events

    @invariant()
    def each_tenants_quota_counts_its_live_threads(self) -> None:
        for tenant in TENANTS:
            quota = self.app.bus.load(quota_stream_id(tenant), evolve_quota)
            live = sum(
                1 for t in self.model.values() if t["tenant_id"] == tenant and not t["deleted"]
            )
            assert (quota.count("threads") if quota else 0) == live


ThreadsMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEveryThreadFoldedFromTheLogEqualsTheModel = ThreadsMachine.TestCase
