"""Read models on a real Redis: disposable (a rebuild gives the same bytes) and exactly once.

Each example writes a random history of tenant, key and thread commands, runs (the scripted
model calling fake tools, driven as a worker drives them), approval answers, cancellations,
direct tool calls and policy changes through the Application into its own SQLite log,
projects it into its own Redis key prefix, and compares the read models (the runs,
approvals and tools views among them) key by key (strings byte for byte, hashes field by
field, sorted sets member by member with their scores).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import msgspec
import redis
import redis.asyncio
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from nome_core.accounts.commands import ExpireCredits, GrantCredits
from nome_core.accounts.events import CreditsConsumed
from nome_core.agents.commands import CreateAgent
from nome_core.application import Actor
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.clock import format_time, parse_time
from nome_core.errors import DomainError
from nome_core.events import Meta
from nome_core.keys.commands import RevokeKey
from nome_core.runs.state import RunState
from nome_core.runs.state import evolve as evolve_run
from nome_core.storage.rows import to_event
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.events import RunAdmitted
from nome_core.tools.commands import SetPolicy
from nome_core.tools.events import ToolCalled, ToolCompleted
from nome_core.tools.policy import PastCall, Policy, decide_call, simulate
from nome_core.tools.state import Call
from projections.accounts import AccountQueries
from projections.engine import ProjectionRunner
from projections.registry import ReadModels
from tests.support.app import (
    add_message,
    call_tool,
    cancel_run,
    create_thread,
    delete_thread,
    make_app,
    rename_thread,
    resolve_approval,
    scripted_driver,
    start_run,
)
from tests.support.env import REDIS_URL, unique
from tests.support.fakes import FakeExecutor, StepClock
from tests.support.log import scan
from tests.support.views import dump

TENANT_NAMES = ("acme", "globex")
Decision = Literal["approved", "denied", "expired"]

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- histories ---------------------------------------------------------------------------

tenant_index = st.integers(0, len(TENANT_NAMES) - 1)
pick = st.integers(0, 50)  # which existing key, thread, run or approval, modulo how many
text = st.sampled_from(["Plans", "Grüße 👋", ""]) | st.text(max_size=8)


def directive(tool: str, arguments: dict[str, Any]) -> str:
    return f"/tool {tool} {json.dumps(arguments, ensure_ascii=False)}"


# What a run's input asks the scripted model to call (the fake tools answer every call).
DIRECTIVES = (
    directive("math.evaluate", {"expression": "2 ** 10"}),
    directive("clock.now", {}),
    directive("thread.note", {"text": "noted ✓"}),
    directive("thread.note", {"text": "x", "fail": "disk full"}),
    directive("http.fetch", {"url": "https://example.com/"}),
    directive("weather.today", {"city": "Oslo"}),
)
run_inputs = st.builds(
    lambda lines, words: "\n".join([*lines, words]),
    st.lists(st.sampled_from(DIRECTIVES), max_size=2),
    text,
)
# Direct calls (`POST /v1/tools/call`): (tool, arguments, whether it names a thread).
DIRECT_CALLS = (
    ("clock.now", {}, False),
    ("math.evaluate", {"expression": "6 * 7"}, False),
    ("thread.note", {"text": "from the console"}, True),
    ("http.fetch", {"url": "https://example.org/"}, False),
    ("http.fetch", {"url": "https://example.org/", "fail": "boom"}, True),
)

decisions = st.sampled_from(["approved", "denied", "expired"])
# A run on a thread of its own, driven as a worker drives it, its approvals answered in
# turn, perhaps cancelled at the end: one operation, so most histories hold a whole run.
episode = st.tuples(
    st.just("episode"), tenant_index, run_inputs, st.lists(decisions, max_size=2), st.booleans()
)

operations = st.one_of(
    st.tuples(st.just("tenant"), tenant_index),
    st.tuples(st.just("key"), tenant_index, st.sampled_from([["admin"], ["viewer", "member"]])),
    st.tuples(st.just("revoke"), pick),
    st.tuples(st.just("thread"), tenant_index, text),
    st.tuples(st.just("rename"), pick, text),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("message"), pick, text),
    st.tuples(st.just("message"), pick, text),
    # Runs on existing threads, queued behind each other or refused, driven, answered and
    # cancelled in any order; and whole episodes, weighted up.
    st.tuples(st.just("run"), pick, run_inputs, st.booleans()),
    episode,
    episode,
    st.tuples(st.just("drive"), pick),
    st.tuples(st.just("answer"), pick, decisions),
    st.tuples(st.just("cancel"), pick),
    st.tuples(st.just("call"), tenant_index, pick, st.sampled_from(DIRECT_CALLS)),
    st.tuples(st.just("policy"), tenant_index, st.sampled_from(["none", "required", "admin"])),
    # Credits granted (some expiring a few steps of the clock later) and expired.
    st.tuples(st.just("grant"), tenant_index, st.integers(1, 300), st.sampled_from([None, 3, 40])),
    st.tuples(st.just("expire"), tenant_index),
    # Project what is in the log so far, so views are also built while history is written.
    st.tuples(st.just("project")),
)
histories = st.one_of(
    st.lists(operations, max_size=30),
    # Half the histories hold at least one whole run, somewhere among the rest.
    st.builds(
        lambda rest, run, at: [*rest[:at], run, *rest[at:]],
        st.lists(operations, max_size=29),
        episode,
        st.integers(0, 29),
    ),
)


# A history that holds every kind of run, approval and call at least once: a run waiting
# on an approval with a second run queued behind it, approvals approved, denied and expired,
# a run cancelled while it waits, direct calls (one approved, one noting into a thread) and
# an admin-tier policy, and a run and a direct call still waiting at the end. Every property
# runs on it as well as on the generated ones.
RICH_HISTORY: list[tuple[Any, ...]] = [
    ("tenant", 0),
    ("tenant", 1),
    ("thread", 0, "Plans"),
    ("run", 0, "\n".join([DIRECTIVES[4], DIRECTIVES[0], "first"]), False),
    ("run", 0, "\n".join([DIRECTIVES[2], DIRECTIVES[3], "second"]), True),
    ("drive", 0),
    ("answer", 0, "approved"),
    ("project",),
    ("drive", 0),
    ("drive", 1),
    (
        "episode",
        1,
        "\n".join([DIRECTIVES[4], DIRECTIVES[4], DIRECTIVES[5], "x"]),
        ["denied"],
        False,
    ),
    ("answer", 1, "approved"),
    ("answer", 2, "expired"),
    ("drive", 2),
    ("episode", 0, "\n".join([DIRECTIVES[4], "y"]), [], True),
    ("call", 0, 0, DIRECT_CALLS[3]),
    ("call", 0, 0, DIRECT_CALLS[2]),
    ("call", 1, 0, DIRECT_CALLS[0]),
    ("answer", 4, "approved"),
    ("policy", 1, "admin"),
    ("episode", 1, "\n".join([DIRECTIVES[4], "z"]), ["approved"], False),
    ("call", 1, 0, DIRECT_CALLS[3]),
    ("episode", 0, "\n".join([DIRECTIVES[1], DIRECTIVES[4], "still waiting"]), [], False),
    ("delete", 0),
]


def noted(what: str) -> None:
    """Count what a history did in Hypothesis's statistics (`--hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(what)


class Approval(NamedTuple):
    """Where an approval waits, as the approval routes find it."""

    tenant: str
    approval_id: str
    stream_id: str
    run_id: str | None
    thread_id: str | None


class World:
    """One example's log, writer, application, Redis prefix and projector."""

    def __init__(self, directory: str, client: redis.Redis, prefix: str, page: int) -> None:
        self.store = EventStore(f"sqlite:///{directory}/events.db")
        self.writer = GroupCommitWriter(self.store)
        self.writer.start()
        # Fake tools: an approved http.fetch must not reach the network.
        self.app = make_app(self.store, self.writer, StepClock(), FakeExecutor())
        self.driver = scripted_driver(self.app)
        self.client = client
        self.prefix = prefix
        self.read_models = ReadModels(prefix)
        self.names = [p.name for p in self.read_models.all]
        self.runner = self.new_runner(page)
        self.keys: list[tuple[str, str]] = []
        self.threads: list[tuple[str, str]] = []
        self.runs: list[tuple[str, str, str]] = []
        self.approvals: list[Approval] = []

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
                await app.tenants.create(TENANT_NAMES[t])
            case "key", (t, roles):
                tenant = tenant_id_for(TENANT_NAMES[t])
                outcome, _ = await app.keys.create(Actor(tenant), "key", roles)
                assert outcome.state is not None
                self.keys.append((tenant, outcome.state.id))
            case "revoke", (i,) if self.keys:
                tenant, key_id = self.keys[i % len(self.keys)]
                await app.keys.handle(Actor(tenant), RevokeKey(key_id=key_id))
            case "thread", (t, title):
                tenant = tenant_id_for(TENANT_NAMES[t])
                created = await create_thread(app, Actor(tenant), title, {"n": title})
                assert created.state is not None
                self.threads.append((tenant, created.state.id))
            case "rename", (i, title) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await rename_thread(app, Actor(tenant), thread_id, title)
            case "delete", (i,) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await delete_thread(app, Actor(tenant), thread_id)
            case "message", (i, content) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                await add_message(app, Actor(tenant), thread_id, content)
            case "run", (i, user_input, enqueue) if self.threads:
                tenant, thread_id = self.threads[i % len(self.threads)]
                started = await start_run(
                    app, Actor(tenant), thread_id, user_input, enqueue=enqueue
                )
                self.runs.append((tenant, started.run.id, thread_id))
            case "episode", (t, user_input, decisions, cancel):
                tenant = tenant_id_for(TENANT_NAMES[t])
                created = await create_thread(app, Actor(tenant), "episode", {})
                assert created.state is not None
                thread_id = created.state.id
                self.threads.append((tenant, thread_id))
                started = await start_run(app, Actor(tenant), thread_id, user_input)
                self.runs.append((tenant, started.run.id, thread_id))
                await self._drive(tenant, thread_id)
                for decision in decisions:
                    asked = [a for a in self.approvals if a.run_id == started.run.id]
                    if asked:
                        with suppress(DomainError):  # answered already: the run is done
                            await self._answer(asked[-1], decision)
                    await self._drive(tenant, thread_id)
                if cancel:
                    await cancel_run(app, Actor(tenant), started.run.id)
            case "drive", (i,) if self.runs:
                tenant, _, thread_id = self.runs[i % len(self.runs)]
                await self._drive(tenant, thread_id)
            case "answer", (i, decision) if self.approvals:
                await self._answer(self.approvals[i % len(self.approvals)], decision)
            case "cancel", (i,) if self.runs:
                tenant, run_id, _ = self.runs[i % len(self.runs)]
                await cancel_run(app, Actor(tenant), run_id)
            case "call", (t, i, (tool, arguments, in_thread)):
                tenant = tenant_id_for(TENANT_NAMES[t])
                mine = [thread for owner, thread in self.threads if owner == tenant]
                thread_id = mine[i % len(mine)] if in_thread and mine else None
                called = await call_tool(app, Actor(tenant), tool, arguments, thread_id=thread_id)
                assert called.state is not None
                self._learn(tenant, called.state.id, thread_id, called.state.calls, run=False)
            case "policy", (t, approval):
                tenant = tenant_id_for(TENANT_NAMES[t])
                policy = Policy(tool="http.fetch", approval=approval, max_calls_per_run=10)
                await app.tools.handle(
                    Actor(tenant),
                    SetPolicy(
                        tenant_id=tenant, policy=policy, dangerous=policy.tool == "http.fetch"
                    ),
                )
            case "grant", (t, amount, expires_in):
                tenant = tenant_id_for(TENANT_NAMES[t])
                expires_at = None
                if expires_in is not None:
                    now = parse_time(app.clock.now())
                    expires_at = format_time(now + timedelta(seconds=expires_in))
                cmd = GrantCredits(
                    tenant_id=tenant,
                    grant_id=app.new_id(),
                    amount=amount,
                    kind="paid",
                    expires_at=expires_at,
                    reason="top-up",
                )
                await app.accounts.grant(Actor(tenant, Meta(principal="platform")), cmd)
            case "expire", (t,):
                tenant = tenant_id_for(TENANT_NAMES[t])
                cmd = ExpireCredits(tenant_id=tenant, at=app.clock.now())
                expired = await app.accounts.expire(Actor(tenant), cmd)
                if expired.events:
                    noted("credits expired")
            case "project", ():
                self.runner.step()

    async def _drive(self, tenant: str, thread_id: str) -> None:
        """As a worker does: the thread's admitted run holding one of the tenant's slots,
        not one waiting in a queue."""
        thread = self.app.threads.get(tenant, thread_id)
        if thread is None or thread.active_run_id is None:
            return
        account = self.app.accounts.get(tenant)
        if account is None or thread.active_run_id not in account.active:
            noted("a run waiting for a slot")
            return
        advanced = await self.driver.advance(Actor(tenant), thread.active_run_id)
        assert advanced.state is not None
        self._learn(tenant, advanced.state.id, thread_id, advanced.state.calls)
        noted(f"a run driven to {advanced.state.status}")

    async def _answer(self, approval: Approval, decision: Decision) -> None:
        await resolve_approval(
            self.app,
            Actor(approval.tenant, Meta(principal="device")),
            approval_id=approval.approval_id,
            stream_id=approval.stream_id,
            run_id=approval.run_id,
            thread_id=approval.thread_id,
            decision=decision,
            roles=("admin",),
        )
        noted(f"an approval {decision}")

    def _learn(
        self,
        tenant: str,
        stream_id: str,
        thread_id: str | None,
        calls: tuple[Call, ...],
        *,
        run: bool = True,
    ) -> None:
        """Remember the approvals a run or a direct call asked for."""
        known = {a.approval_id for a in self.approvals}
        for call in calls:
            if call.approval_id is not None and call.approval_id not in known:
                self.approvals.append(
                    Approval(
                        tenant, call.approval_id, stream_id, stream_id if run else None, thread_id
                    )
                )

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
@example(history=RICH_HISTORY, page=2)
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
@example(earlier=RICH_HISTORY[:9], later=RICH_HISTORY[9:], rebuilt="runs", page=2)
@example(earlier=RICH_HISTORY[:9], later=RICH_HISTORY[9:], rebuilt="approvals", page=3)
@example(earlier=RICH_HISTORY[:13], later=RICH_HISTORY[13:], rebuilt="tools", page=4)
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


@PROPERTY_SETTINGS
@given(history=histories, page=st.integers(1, 6), steps=st.integers(0, 12))
@example(history=RICH_HISTORY, page=3, steps=5)
def test_a_runner_that_dies_midway_is_resumed_by_another_to_what_a_fresh_rebuild_gives(
    history: list[tuple[Any, ...]], page: int, steps: int
) -> None:
    with world(page) as w:
        w.write([op for op in history if op[0] != "project"])
        for _ in range(steps):
            w.runner.step()
        # It dies without releasing its leases; they lapse, and another runner takes over.
        for name in w.names:
            w.client.delete(w.runner.tracking.lease(name))
        w.runner = w.new_runner(page)
        w.runner.catch_up()
        resumed = dump(w.client, w.prefix)

        w.rebuild_all()

        assert resumed == dump(w.client, w.prefix)
        assert set(w.positions().values()) == {w.store.head()}


def test_the_runs_approvals_and_tools_views_hold_what_the_log_holds() -> None:
    """Not only the same bytes twice: the right ones. Each run, approval and receipt of the
    log is in its view with its status, and the sets workers and jobs read hold exactly the
    runs that may go on and the approvals that may expire."""
    with world(page=4) as w:
        w.write(RICH_HISTORY)
        w.runner.catch_up()
        events = [to_event(row.state, row.position) for row in scan(w.store)]
        views, client = w.read_models, w.client

        runs: dict[str, RunState] = {}
        for recorded in (e for e in events if e.run_id == e.stream_id):
            folded = evolve_run(runs.get(recorded.stream_id), recorded)
            assert folded is not None
            runs[recorded.stream_id] = folded
        admitted = {e.data.run_id for e in events if isinstance(e.data, RunAdmitted)}
        asked = [
            (e.tenant_id, e.run_id, e.data) for e in events if isinstance(e.data, ApprovalRequested)
        ]
        answers = {
            e.data.approval_id: e.data for e in events if isinstance(e.data, ApprovalResolved)
        }
        receipts = [
            (e.tenant_id, e.data.receipt) for e in events if isinstance(e.data, ToolCompleted)
        ]
        calls = [e for e in events if isinstance(e.data, ToolCalled)]
        statuses = {run.status for run in runs.values()}
        assert {"completed", "cancelled", "active"} <= statuses
        assert {a.decision for a in answers.values()} == {"approved", "denied", "expired"}

        for run in runs.values():
            doc = msgspec.json.decode(client.get(views.runs.doc(run.tenant_id, run.id)) or b"{}")
            assert (doc["status"], doc["event_count"]) == (run.status, run.event_count)
            assert doc["awaiting_approval"] == run.awaiting_approval
        runnable = {
            f"{run.tenant_id}|{run.id}".encode()
            for run in runs.values()
            if run.id in admitted and not run.terminal and not run.awaiting_approval
        }
        assert client.smembers(views.runs.runnable()) == runnable
        for tenant, run_id, approval in asked:
            raw = client.get(views.approvals.doc(tenant, approval.approval_id))
            doc = msgspec.json.decode(raw or b"{}")
            answer = answers.get(approval.approval_id)
            assert doc["status"] == (answer.decision if answer else "pending")
            assert (doc["run_id"], doc["call_id"]) == (run_id, approval.call_id)
        pending = {
            f"{t}|{a.approval_id}".encode() for t, _, a in asked if a.approval_id not in answers
        }
        assert set(client.zrange(views.approvals.expiry(), 0, -1)) == pending
        for tenant, receipt in receipts:
            raw = client.get(views.tools.receipt(tenant, receipt.id))
            assert msgspec.json.decode(raw or b"{}")["status"] == receipt.status
        for tenant in {e.tenant_id for e in calls}:
            mine = [e for e in calls if e.tenant_id == tenant]
            assert client.llen(views.tools.recent_calls(tenant)) == len(mine)


def test_simulating_the_policy_in_force_over_the_tools_view_changes_no_decision() -> None:
    """A call the run's agent could not make (its tool is not in the agent's list) is denied
    whatever the tool's policy says, so no proposed policy can change its decision."""
    tenant = tenant_id_for("acme")
    agent = CreateAgent(
        agent_id="00000000-0000-4000-8000-00000000a9e7",
        name="clock only",
        instructions="",
        provider="scripted",
        model="scripted-1",
        tools=["clock.now"],
        tier="standard",
    )
    with world() as w:

        async def history() -> None:
            await w.app.tenants.create("acme")
            await w.app.agents.handle(Actor(tenant), agent)
            thread = await create_thread(w.app, Actor(tenant), "t", {})
            assert thread.state is not None
            lines = [directive("math.evaluate", {"expression": "1 + 1"}), "done"]
            started = await start_run(
                w.app, Actor(tenant), thread.state.id, "\n".join(lines), agent_id=agent.agent_id
            )
            await w.driver.advance(Actor(tenant), started.run.id)

        asyncio.run(history())
        w.runner.catch_up()
        raw = w.client.lrange(w.read_models.tools.recent_calls(tenant), 0, -1)
        past = [msgspec.json.decode(r, type=PastCall) for r in raw]
        in_force = Policy(tool="math.evaluate")

        assert [(p.tool, p.decision) for p in past] == [("math.evaluate", "deny")]
        assert decide_call(in_force, calls_so_far=0, roles=["member"]).decision == "allow"
        assert simulate(in_force, past).changes == {}


# Grants spent, expired while a run holds part of them, and expired again once it ended.
LEDGER_HISTORY: list[tuple[Any, ...]] = [
    ("grant", 0, 100, 3),
    ("episode", 0, "spend it", [], False),
    ("expire", 0),
    ("grant", 1, 50, 3),
    ("thread", 1, "held"),
    ("run", 1, DIRECTIVES[4] + "\nwaits for an approval", False),
    ("drive", 1),
    ("expire", 1),
    ("cancel", 1),
    ("expire", 1),
]


@PROPERTY_SETTINGS
@given(history=histories)
@example(history=RICH_HISTORY)
@example(history=LEDGER_HISTORY)
def test_the_ledger_never_overdraws_charges_each_run_once_and_folds_to_the_read_model(
    history: list[tuple[Any, ...]],
) -> None:
    with world() as w:
        # Both tenants exist, so every grant, run and expiry of the history lands.
        w.write([("tenant", 0), ("tenant", 1), *history])
        w.runner.catch_up()
        events = [to_event(r.state, r.position) for r in scan(w.store)]
        charges = Counter(e.data.run_id for e in events if isinstance(e.data, CreditsConsumed))
        assert all(n == 1 for n in charges.values()), charges
        runs = {}
        for event in events:
            if event.run_id is not None and event.run_id == event.stream_id:
                runs[event.stream_id] = evolve_run(runs.get(event.stream_id), event)

        for name in TENANT_NAMES:
            tenant = tenant_id_for(name)
            account = w.app.accounts.get(tenant)
            if account is None:
                continue
            assert account.balance == account.granted - account.consumed - account.expired
            assert account.available >= 0 and account.balance >= 0
            # What is reserved is held by the tenant's unfinished runs, and only by them.
            unfinished = {
                r for r, s in runs.items() if s and s.tenant_id == tenant and not s.terminal
            }
            assert set(account.reservations) == unfinished
            assert len(account.active) <= 4  # the free plan's max_concurrent_runs
            queries = asyncio.run(_credits(w, tenant))
            assert queries == (account.balance, account.available, account.reserved)
        w.rebuild_all()
        for name in TENANT_NAMES:
            tenant = tenant_id_for(name)
            account = w.app.accounts.get(tenant)
            if account is not None:
                rebuilt = asyncio.run(_credits(w, tenant))
                assert rebuilt == (account.balance, account.available, account.reserved)


async def _credits(w: World, tenant: str) -> tuple[int, int, int]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        credits = await AccountQueries(w.read_models.accounts, client).credits(tenant)
    finally:
        await client.aclose()
    return credits.balance, credits.available, credits.reserved
