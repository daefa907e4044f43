"""Runs through the real core on SQLite, driven as a worker drives them: the log folds to the
model.

Threads and runs are created through `Application`; runs are driven by the worker's
`RunDriver` with the scripted model and fake tools (their results are known from the call,
so the model predicts every receipt and every answer); approvals are answered, runs
cancelled and threads deleted (their runs with them) in between. After every step each run
and thread folded from the log equals the model, the queue admits runs one at a time and in
order, an ended run never changes again, and `verify` finds every ended run deterministic.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from nome_core.accounts.state import account_stream_id
from nome_core.accounts.state import evolve as evolve_account
from nome_core.application import Actor
from nome_core.approvals.errors import AlreadyResolved, ApprovalNotFound
from nome_core.errors import DomainError
from nome_core.events import Event, Meta
from nome_core.runs.errors import RunEnded, RunNotFound
from nome_core.runs.state import evolve as evolve_run
from nome_core.runs.verify import verify
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.errors import RunInProgress, ThreadNotFound
from nome_core.threads.events import RunAdmitted
from nome_core.threads.state import ThreadState
from nome_core.threads.state import evolve as evolve_thread
from nome_core.tools.commands import SetPolicy
from nome_core.tools.policy import Policy
from nome_core.tools.state import Call
from tests.support.app import (
    cancel_run,
    create_thread,
    delete_thread,
    make_app,
    resolve_approval,
    scripted_driver,
    start_run,
)
from tests.support.fakes import FakeExecutor, StepClock, fake_result

TENANT_NAMES = ("acme", "globex")
TENANTS = tuple(tenant_id_for(name) for name in TENANT_NAMES)
TERMINAL = frozenset({"completed", "failed", "cancelled"})
DEVICES = ("phone", "laptop")
Decision = Literal["approved", "denied", "expired"]
S = TypeVar("S")

# -- what the model knows of tools and policies --------------------------------------------

# Set for every tenant before anything else: a second maths call in a run is denied, and an
# unreachable clock is skipped. http.fetch keeps its default: it needs an approval.
POLICIES = (
    Policy(tool="math.evaluate", max_calls_per_run=1),
    Policy(tool="clock.now", offline="skip"),
)
KNOWN_TOOLS = frozenset({"math.evaluate", "clock.now", "thread.note", "http.fetch"})
DEFAULT_ROLES = frozenset({"member", "operator", "admin"})


@dataclass(frozen=True)
class Directive:
    tool: str
    arguments: dict[str, Any]

    @property
    def line(self) -> str:
        return f"/tool {self.tool} {json.dumps(self.arguments, ensure_ascii=False)}"


DIRECTIVES = (
    Directive("math.evaluate", {"expression": "6 * 7"}),
    Directive("clock.now", {}),
    Directive("clock.now", {"offline": True}),
    Directive("thread.note", {"text": "remember the milk 🥛"}),
    Directive("thread.note", {"text": "lost", "fail": "disk full"}),
    Directive("http.fetch", {"url": "https://example.com/ü"}),
    Directive("weather.today", {"city": "Oslo"}),
)

# Words never start a directive and never hold whitespace or line breaks of any kind.
words = st.lists(
    st.sampled_from(["Grüße", "👋", "naïve", "42"])
    | st.text(
        alphabet=st.characters(
            exclude_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp"), exclude_characters="/"
        ),
        min_size=1,
        max_size=6,
    ),
    max_size=4,
)
directives = st.lists(st.sampled_from(DIRECTIVES), max_size=4)
creators = st.sampled_from([("member",), ("viewer",), ("admin", "viewer")])


def decided(tool: str, roles: tuple[str, ...], earlier: int) -> tuple[str, str]:
    """The decision and rule the tenant's policies give a run's call (`earlier`: calls of
    the same tool before it in the run)."""
    if tool not in KNOWN_TOOLS:
        return "deny", "unknown_tool"
    if not DEFAULT_ROLES & set(roles):
        return "deny", "allowed_roles"
    if tool == "math.evaluate" and earlier >= 1:
        return "deny", "max_calls_per_run"
    if tool == "http.fetch":
        return "approval_required", "approval:required"
    return "allow", "policy"


def replay(evolve: Callable[[S | None, Event], S | None], events: list[Event]) -> S:
    """A stream's state folded from its events (which the test knows make one)."""
    state: S | None = None
    for recorded in events:
        state = evolve(state, recorded)
    assert state is not None
    return state


# -- the model -----------------------------------------------------------------------------


@dataclass
class ModelCall:
    tool: str
    arguments: dict[str, Any]
    decision: str
    rule: str
    approval: str | None = None
    approval_id: str | None = None
    # (status, error) once the call has its receipt; an ok result is `fake_result`.
    receipt: tuple[str, str | None] | None = None
    ran: bool = False

    def run(self) -> None:
        """The call runs (or is refused by its policy) as the fake tools and policies say."""
        self.ran = self.decision != "deny"
        if self.decision == "deny":
            self.receipt = ("denied", f"denied by policy ({self.rule})")
        elif self.arguments.get("offline"):
            status = "skipped" if self.tool == "clock.now" else "error"
            self.receipt = (status, f"{self.tool} is unreachable")
        elif "fail" in self.arguments:
            self.receipt = ("error", str(self.arguments["fail"]))
        else:
            self.receipt = ("ok", None)


@dataclass
class ModelRun:
    id: str
    tenant: str
    thread: str
    input: str
    directives: list[Directive]
    words: list[str]
    roles: tuple[str, ...]
    status: str = "pending"
    calls: list[ModelCall] = field(default_factory=list)
    cancelled_by: str | None = None
    # The run's event count once it ended, and whether verify has looked at it.
    ended_at_count: int | None = None
    verified: bool = False

    def answer(self, call_ids: list[str]) -> str:
        """What the scripted model answers once every call has its receipt."""
        lines = [" ".join(self.words)] if self.words else []
        for call, call_id in zip(self.calls, call_ids, strict=True):
            assert call.receipt is not None
            status, error = call.receipt
            if status == "ok":
                result = fake_result(call.tool, call_id, call.arguments)
                outcome = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
            elif status == "error":
                outcome = f"error {error}"
            else:
                outcome = status
            lines.append(f"{call.tool}: {outcome}")
        return "\n".join(lines)

    @property
    def credits(self) -> int:
        """Standard tier: 2 credits per 1,000 words in and out, at least one; so one for
        every run here (each stays far below 500 words, as the invariant checks)."""
        return 1


@dataclass
class ModelThread:
    tenant: str
    deleted: bool = False
    messages: int = 0
    active: str | None = None
    queue: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)


class RunsMachine(RuleBasedStateMachine):
    threads = Bundle("threads")
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="nome-runs-")
        self.store = EventStore(f"sqlite:///{self.directory}/events.db")
        self.writer = GroupCommitWriter(self.store)
        self.writer.start()
        self.executor = FakeExecutor()
        self.app = make_app(self.store, self.writer, StepClock(), self.executor)
        self.driver = scripted_driver(self.app)
        self.loop = asyncio.new_event_loop()
        self.model_threads: dict[str, ModelThread] = {}
        self.model_runs: dict[str, ModelRun] = {}
        self.consumed = dict.fromkeys(TENANTS, 0)
        for name in TENANT_NAMES:
            # Enterprise: its run slots and credits never bind in a history this short, so
            # a thread's admitted run is its running run (the ledger has its own tests).
            self.run(self.app.tenants.create(name, plan="enterprise"))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.writer.stop()
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def run(self, command: Any) -> Any:
        return self.loop.run_until_complete(command)

    def expect(self, error: type[DomainError], command: Any) -> None:
        """The command is refused with `error` and appends nothing."""
        head = self.store.head()
        try:
            self.run(command)
        except error:
            pass
        else:
            raise AssertionError(f"expected {error.__name__}")
        assert self.store.head() == head, "a refused command appended events"

    # -- the model's moves ---------------------------------------------------------------

    def end(self, run: ModelRun, status: str, by: str | None = None) -> None:
        # A run that started is charged what it used (here always the least a run costs);
        # one cancelled before it started, nothing.
        if status == "completed" or run.status == "active":
            self.consumed[run.tenant] += run.credits
        run.status, run.cancelled_by = status, by
        thread = self.model_threads[run.thread]
        if thread.active == run.id:
            thread.active = thread.queue.pop(0) if thread.queue else None
            if thread.active is not None:
                event("a queued run is admitted")
                thread.admitted.append(thread.active)
        elif run.id in thread.queue:
            thread.queue.remove(run.id)

    def advance(self, run: ModelRun) -> None:
        """What a worker's turn does to the run: as far as it goes without a person."""
        thread = self.model_threads[run.thread]
        if run.status in TERMINAL:
            return
        if run.status == "pending" and thread.deleted:
            self.end(run, "cancelled", by="system")
            return
        if run.status == "pending":
            run.status = "active"
            seen: dict[str, int] = {}
            for directive in run.directives:
                decision, rule_name = decided(
                    directive.tool, run.roles, seen.get(directive.tool, 0)
                )
                seen[directive.tool] = seen.get(directive.tool, 0) + 1
                run.calls.append(
                    ModelCall(directive.tool, directive.arguments, decision, rule_name)
                )
        for call in run.calls:
            if call.receipt is not None:
                continue
            if call.decision == "approval_required" and call.approval != "approved":
                if call.approval is None:
                    call.approval = "pending"
                return  # it waits for a person
            call.run()
            if call.tool == "thread.note" and call.receipt == ("ok", None) and not thread.deleted:
                thread.messages += 1
        if (run.words or run.calls) and not thread.deleted:
            thread.messages += 1
        self.end(run, "completed")

    def learn_ids(self, run: ModelRun) -> None:
        """Approval ids come from the clock; the model takes them from the run."""
        state = self.app.runs.get(run.tenant, run.id)
        assert state is not None
        for call, real in zip(run.calls, state.calls, strict=True):
            call.approval_id = real.approval_id

    # -- rules ---------------------------------------------------------------------------

    @initialize()
    def set_the_tenants_policies_and_default_agents(self) -> None:
        for tenant in TENANTS:
            for policy in POLICIES:
                cmd = SetPolicy(
                    tenant_id=tenant, policy=policy, dangerous=policy.tool == "http.fetch"
                )
                outcome = self.run(self.app.tools.handle(Actor(tenant), cmd))
                assert len(outcome.events) == 1
            # Made on a tenant's first run otherwise (in that run's commit).
            _, ensure = self.run(self.app.agents.for_run(Actor(tenant), None))
            if ensure is not None:
                self.run(self.app.agents.handle(Actor(tenant), ensure))

    @initialize(target=threads)
    def create_a_first_thread(self) -> str:
        return self.create_thread(TENANTS[0])

    @initialize(target=runs, calls=directives, text=words)
    def create_a_first_run_on_a_thread_of_its_own(
        self, calls: list[Directive], text: list[str]
    ) -> Any:
        thread_id = self.create_thread(TENANTS[1])
        return self.create_run(thread_id, calls, text, False, ("member",), True)

    @rule(target=threads, tenant=st.sampled_from(TENANTS))
    def create_thread(self, tenant: str) -> str:
        outcome = self.run(create_thread(self.app, Actor(tenant), "t", {}))
        assert isinstance(outcome.state, ThreadState)
        self.model_threads[outcome.state.id] = ModelThread(tenant)
        return outcome.state.id

    @rule(
        target=runs,
        thread_id=threads,
        calls=directives,
        text=words,
        enqueue=st.booleans(),
        roles=creators,
        own_tenant=st.booleans() | st.just(True),
    )
    def create_run(
        self,
        thread_id: str,
        calls: list[Directive],
        text: list[str],
        enqueue: bool,
        roles: tuple[str, ...],
        own_tenant: bool,
    ) -> Any:
        thread = self.model_threads[thread_id]
        tenant = thread.tenant if own_tenant else next(t for t in TENANTS if t != thread.tenant)
        user_input = "\n".join([*(d.line for d in calls), " ".join(text)])
        command = start_run(
            self.app, Actor(tenant), thread_id, user_input, enqueue=enqueue, roles=roles
        )
        if thread.deleted or not own_tenant:
            self.expect(ThreadNotFound, command)
            return multiple()
        if thread.active is not None and not enqueue:
            self.expect(RunInProgress, command)
            return multiple()
        started = self.run(command)
        run_id = started.run.id
        self.model_runs[run_id] = ModelRun(
            run_id, thread.tenant, thread_id, user_input, calls, text, roles
        )
        thread.messages += 1
        if thread.active is None:
            thread.active = run_id
            thread.admitted.append(run_id)
        else:
            thread.queue.append(run_id)
        assert started.runnable == (thread.active == run_id)
        return run_id

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data())
    def a_worker_drives_an_admitted_or_ended_run(self, data: st.DataObject) -> None:
        # Queued runs are not offered to workers: the runnable set holds admitted runs only.
        offered = sorted(
            {t.active for t in self.model_threads.values() if t.active}
            | {r.id for r in self.model_runs.values() if r.status in TERMINAL}
        )
        if offered:
            self.drive(self.model_runs[data.draw(st.sampled_from(offered), label="run")])

    @rule()
    def the_workers_drive_every_admitted_run_as_far_as_it_goes(self) -> None:
        while True:
            going = [
                self.model_runs[t.active]
                for t in self.model_threads.values()
                if t.active and not self.waits(self.model_runs[t.active])
            ]
            if not going:
                return
            for run in going:
                self.drive(run)

    def waits(self, run: ModelRun) -> bool:
        return any(c.approval == "pending" for c in run.calls)

    def drive(self, run: ModelRun) -> None:
        head, was = self.store.head(), run.status
        advanced = self.run(self.driver.advance(Actor(run.tenant), run.id))
        self.advance(run)
        self.learn_ids(run)
        assert advanced.retry_after_s is None
        assert advanced.state is not None and advanced.state.status == run.status
        if was in TERMINAL:
            assert self.store.head() == head, "an ended run changed"
        else:
            event(f"driven to {run.status}" + (" (waits)" if self.waits(run) else ""))

    @precondition(
        lambda self: any(c.approval_id for r in self.model_runs.values() for c in r.calls)
    )
    @rule(
        data=st.data(),
        decision=st.sampled_from(["approved", "approved", "denied", "expired"]),
        device=st.sampled_from(DEVICES),
        own_tenant=st.booleans() | st.just(True),
    )
    def a_device_answers_an_approval(
        self, data: st.DataObject, decision: Decision, device: str, own_tenant: bool
    ) -> None:
        asked = sorted(
            (run.id, index)
            for run in self.model_runs.values()
            for index, call in enumerate(run.calls)
            if call.approval_id is not None
        )
        run_id, index = data.draw(st.sampled_from(asked), label="approval")
        run, call = self.model_runs[run_id], self.model_runs[run_id].calls[index]
        tenant = run.tenant if own_tenant else next(t for t in TENANTS if t != run.tenant)
        principal = "system:expiry" if decision == "expired" else device
        assert call.approval_id is not None
        command = resolve_approval(
            self.app,
            Actor(tenant, Meta(principal=principal)),
            approval_id=call.approval_id,
            stream_id=run.id,
            run_id=run.id,
            thread_id=run.thread,
            decision=decision,
            roles=("admin",) if decision == "expired" else ("member",),
        )
        if not own_tenant:
            self.expect(ApprovalNotFound, command)
            return
        if call.approval != "pending":
            event("approval answered twice")
            self.expect(AlreadyResolved, command)
            return
        event(f"approval {decision}")
        outcome = self.run(command)
        call.approval = decision
        if decision != "approved":
            call.receipt = ("denied", f"{decision} by {principal}")
        assert len(outcome.events) == (1 if decision == "approved" else 2)

    @rule(run_id=runs, own_tenant=st.booleans() | st.just(True))
    def cancel_a_run(self, run_id: str, own_tenant: bool) -> None:
        run = self.model_runs[run_id]
        tenant = run.tenant if own_tenant else next(t for t in TENANTS if t != run.tenant)
        command = cancel_run(self.app, Actor(tenant), run_id)
        if not own_tenant:
            self.expect(RunNotFound, command)
            return
        if run.status in ("completed", "failed"):
            self.expect(RunEnded, command)
            return
        outcome = self.run(command)
        if run.status == "cancelled":
            assert outcome.events == []
            return
        for call in run.calls:
            if call.approval == "pending":
                event("cancel withdraws an approval")
                call.approval = "denied"  # withdrawn: nobody may answer it any more
        event(f"cancel a {run.status} run")
        self.end(run, "cancelled", by="tester")

    @rule(thread_id=threads)
    def delete_a_thread(self, thread_id: str) -> None:
        thread = self.model_threads[thread_id]
        command = delete_thread(self.app, Actor(thread.tenant), thread_id)
        if thread.deleted:
            self.expect(ThreadNotFound, command)
            return
        self.run(command)
        thread.deleted = True
        # Its runs stop with it: the queued ones first, so the active one admits nobody.
        stopped = [self.model_runs[r] for r in [*thread.queue, thread.active] if r]
        for run in stopped:
            for call in run.calls:
                if call.approval == "pending":
                    call.approval = "denied"  # withdrawn
            event(f"deleting a thread cancels a {run.status} run")
            self.end(run, "cancelled")

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_run_folded_from_the_log_equals_the_model(self) -> None:
        for run in self.model_runs.values():
            events = self.store.load(run.id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            state = replay(evolve_run, events)
            assert self.app.runs.get(run.tenant, run.id) == state
            other = next(t for t in TENANTS if t != run.tenant)
            assert self.app.runs.get(other, run.id) is None

            assert (state.status, state.event_count) == (run.status, len(events))
            assert (state.thread_id, state.input, state.creator_roles) == (
                run.thread,
                run.input,
                sorted(run.roles),
            )
            if run.status == "cancelled":
                assert state.cancelled_by == run.cancelled_by
            self.check_calls(run, state.calls)
            if run.status == "completed":
                answer = run.answer([c.call_id for c in state.calls])
                assert state.output == answer
                assert [(m.text, m.completed) for m in state.messages] == (
                    [(answer, True)] if answer else []
                )
                assert state.usage.input_tokens + state.usage.output_tokens < 500
                assert state.usage.credits == run.credits
                assert state.usage.input_tokens == len(run.input.split())
                assert state.usage.output_tokens == len(answer.split())
            else:
                assert state.messages == () and state.output is None

    def check_calls(self, run: ModelRun, calls: tuple[Call, ...]) -> None:
        assert [(c.tool, c.arguments) for c in calls] == [(m.tool, m.arguments) for m in run.calls]
        for real, expected in zip(calls, run.calls, strict=True):
            assert (real.policy.decision, real.policy.rule) == (expected.decision, expected.rule)
            assert real.approval_status == expected.approval
            assert (real.approval_id is not None) == (expected.approval is not None)
            if expected.receipt is None:
                assert real.receipt is None
            else:
                assert real.receipt is not None
                assert (real.receipt.status, real.receipt.error) == expected.receipt
                assert (real.receipt.run_id, real.receipt.call_id) == (run.id, real.call_id)
                result = (
                    fake_result(real.tool, real.call_id, real.arguments)
                    if expected.receipt[0] == "ok"
                    else None
                )
                assert real.receipt.result == result
            # The fake tools ran every call that was not refused, exactly once.
            assert self.executor.runs_of(real.call_id) == (1 if expected.ran else 0)

    @invariant()
    def every_thread_folded_from_the_log_equals_the_model(self) -> None:
        for thread_id, thread in self.model_threads.items():
            events = self.store.load(thread_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            state = replay(evolve_thread, events)
            assert (state.deleted, state.message_count) == (thread.deleted, thread.messages)
            assert state.active_run_id == thread.active
            assert state.queued_run_ids == tuple(thread.queue)
            admitted = [e.data.run_id for e in events if isinstance(e.data, RunAdmitted)]
            assert admitted == thread.admitted

    @invariant()
    def a_thread_has_at_most_one_run_going_and_it_is_the_admitted_one(self) -> None:
        going: dict[str, list[str]] = {}
        for run in self.model_runs.values():
            state = self.app.runs.get(run.tenant, run.id)
            assert state is not None
            if not state.terminal and run.id not in self.model_threads[run.thread].queue:
                going.setdefault(run.thread, []).append(run.id)
            if state.status == "active":
                assert self.model_threads[run.thread].active == run.id
        for thread_id, ids in going.items():
            assert ids == [self.model_threads[thread_id].active]

    @invariant()
    def a_cancelled_run_waits_for_nobody(self) -> None:
        for run in self.model_runs.values():
            state = self.app.runs.get(run.tenant, run.id)
            assert state is not None
            if state.status == "cancelled":
                assert not state.awaiting_approval
                assert all(c.approval_status != "pending" for c in state.calls)

    @invariant()
    def an_ended_run_never_changes_and_verify_finds_it_deterministic(self) -> None:
        for run in self.model_runs.values():
            if run.status not in TERMINAL:
                continue
            events = self.store.load(run.id)
            if run.ended_at_count is None:
                run.ended_at_count = len(events)
            assert len(events) == run.ended_at_count
            if not run.verified:
                verdict = self.run(verify(events))
                assert verdict.deterministic, verdict
                assert verdict.events_compared == len(events)
                run.verified = True

    @invariant()
    def each_tenant_is_charged_once_for_each_run_that_started(self) -> None:
        for tenant in TENANTS:
            account = replay(evolve_account, self.store.load(account_stream_id(tenant)))
            assert account.consumed == self.consumed[tenant]
            unfinished = {
                r.id
                for r in self.model_runs.values()
                if r.tenant == tenant and r.status not in TERMINAL
            }
            assert set(account.reservations) == unfinished


RunsMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEveryRunFoldedFromTheLogEqualsTheModel = RunsMachine.TestCase
