"""Approvals through the real core on SQLite: many devices answer the same queue, and the
first answer wins.

Calls that need an approval come from runs (driven by the worker's `RunDriver` with the
scripted model) and from direct calls of `http.fetch` (which needs one by default); the
fake executor stands in for the network. Devices with the member or the admin role approve
and deny at random, the expiry job expires, the tool's tier is switched between `required`
and `admin`, runs are cancelled. After every step each approval has been resolved at most
once and as the model says, a refused call has its denied receipt, and an approved call ran
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nome_core.application import Actor
from nome_core.approvals.errors import AdminApprovalRequired, AlreadyResolved, ApprovalNotFound
from nome_core.approvals.events import ApprovalResolved
from nome_core.calls.state import DirectCall
from nome_core.errors import DomainError
from nome_core.events import Meta
from nome_core.runs.state import RunState
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.tools.commands import SetPolicy
from nome_core.tools.policy import Policy
from nome_core.tools.state import Call
from tests.support.app import (
    call_tool,
    cancel_run,
    create_thread,
    make_app,
    resolve_approval,
    scripted_driver,
    start_run,
)
from tests.support.fakes import FakeExecutor, StepClock, fake_result

TENANT = tenant_id_for("acme")
OTHER_TENANT = tenant_id_for("globex")
Tier = Literal["required", "admin"]
Decision = Literal["approved", "denied", "expired"]


@dataclass(frozen=True)
class Device:
    principal: str
    roles: tuple[str, ...]


DEVICES = (
    Device("phone", ("member",)),
    Device("laptop", ("member", "operator")),
    Device("console", ("admin",)),
)
# The approval-expiry job answers as the system, with every role.
EXPIRY = Device("system:expiry", ("admin",))
URLS = st.sampled_from(["https://example.com/a", "https://example.org/ü?q=1"])


@dataclass
class ModelApproval:
    id: str
    stream_id: str
    run_id: str | None
    call_id: str
    tier: Tier
    status: str = "pending"
    by: str | None = None
    # Closed by the run's cancellation rather than answered: no receipt.
    withdrawn: bool = False


@dataclass
class ModelRun:
    id: str
    thread_id: str
    # The tier each of the run's calls was decided under, once the run started.
    tiers: list[Tier] = field(default_factory=list)
    fetches: int = 0
    cancelled: bool = False


class ApprovalsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="nome-approvals-")
        self.store = EventStore(f"sqlite:///{self.directory}/events.db")
        self.writer = GroupCommitWriter(self.store)
        self.writer.start()
        self.executor = FakeExecutor()
        self.app = make_app(self.store, self.writer, StepClock(), self.executor)
        self.driver = scripted_driver(self.app)
        self.loop = asyncio.new_event_loop()
        self.tier: Tier = "required"
        self.approvals: dict[str, ModelApproval] = {}
        self.runs: dict[str, ModelRun] = {}
        self.direct_calls: list[str] = []
        for name in ("acme", "globex"):
            self.loop.run_until_complete(self.app.tenants.create(name, plan="enterprise"))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.writer.stop()
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def run(self, command: Any) -> Any:
        return self.loop.run_until_complete(command)

    def expect(self, error: type[DomainError], command: Any) -> None:
        head = self.store.head()
        try:
            self.run(command)
        except error:
            pass
        else:
            raise AssertionError(f"expected {error.__name__}")
        assert self.store.head() == head, "a refused answer appended events"

    def actor(self, device: Device, tenant: str = TENANT) -> Actor:
        return Actor(tenant, Meta(principal=device.principal))

    # -- where approvals come from -------------------------------------------------------

    @initialize(tier=st.sampled_from(["required", "admin"]), url=URLS)
    def choose_the_tier_and_make_a_first_call_that_waits(self, tier: Tier, url: str) -> None:
        _, ensure = self.run(self.app.agents.for_run(Actor(TENANT), None))
        if ensure is not None:
            self.run(self.app.agents.handle(Actor(TENANT), ensure))
        self.an_admin_sets_the_fetch_tools_approval_tier(tier)
        self.a_device_calls_the_fetch_tool_directly(url, DEVICES[0])

    @rule(tier=st.sampled_from(["required", "admin"]))
    def an_admin_sets_the_fetch_tools_approval_tier(self, tier: Tier) -> None:
        policy = Policy(tool="http.fetch", approval=tier, max_calls_per_run=10)
        cmd = SetPolicy(tenant_id=TENANT, policy=policy, dangerous=policy.tool == "http.fetch")
        self.run(self.app.tools.handle(Actor(TENANT), cmd))
        self.tier = tier

    @rule(url=URLS, device=st.sampled_from(DEVICES))
    def a_device_calls_the_fetch_tool_directly(self, url: str, device: Device) -> None:
        outcome = self.run(
            call_tool(self.app, self.actor(device), "http.fetch", {"url": url}, roles=device.roles)
        )
        state = outcome.state
        assert isinstance(state, DirectCall)
        call = state.call
        assert call.receipt is None and call.approval_id is not None
        assert self.executor.runs_of(call.call_id) == 0
        self.direct_calls.append(state.id)
        self.approvals[call.approval_id] = ModelApproval(
            call.approval_id, state.id, None, call.call_id, self.tier
        )

    @rule(urls=st.lists(URLS, min_size=1, max_size=3))
    def a_run_fetches_pages(self, urls: list[str]) -> None:
        lines = [f"/tool http.fetch {json.dumps({'url': u})}" for u in urls]
        thread = self.run(create_thread(self.app, Actor(TENANT), "t", {})).state
        assert thread is not None
        started = self.run(start_run(self.app, Actor(TENANT), thread.id, "\n".join([*lines, "ok"])))
        self.runs[started.run.id] = ModelRun(started.run.id, thread.id, fetches=len(urls))
        self.drive(self.runs[started.run.id])

    def drive(self, run: ModelRun) -> None:
        state = self.run(self.driver.advance(Actor(TENANT), run.id)).state
        assert isinstance(state, RunState)
        if not run.tiers and state.calls:
            run.tiers = [self.tier] * run.fetches
        for index, call in enumerate(state.calls):
            if call.approval_id is not None and call.approval_id not in self.approvals:
                self.approvals[call.approval_id] = ModelApproval(
                    call.approval_id, run.id, run.id, call.call_id, run.tiers[index]
                )
        # The calls are asked about one at a time, in order.
        assert len([c for c in state.calls if c.approval_status == "pending"]) <= 1

    @precondition(lambda self: bool(self.runs))
    @rule()
    def the_workers_drive_every_run(self) -> None:
        for run in self.runs.values():
            self.drive(run)

    @precondition(lambda self: bool(self.runs))
    @rule(data=st.data())
    def a_run_is_cancelled(self, data: st.DataObject) -> None:
        run = self.runs[data.draw(st.sampled_from(sorted(self.runs)), label="run")]
        state = self.app.runs.get(TENANT, run.id)
        assert state is not None
        if state.status == "completed":
            return
        self.run(cancel_run(self.app, Actor(TENANT), run.id))
        run.cancelled = True
        for approval in self.approvals.values():
            if approval.run_id == run.id and approval.status == "pending":
                event("a cancel withdraws an approval")
                approval.status, approval.by, approval.withdrawn = "denied", "tester", True

    # -- answers -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.approvals))
    @rule(
        data=st.data(),
        device=st.sampled_from(DEVICES),
        decision=st.sampled_from(["approved", "denied"]),
    )
    def a_device_answers_an_approval(
        self, data: st.DataObject, device: Device, decision: Decision
    ) -> None:
        self.answer(data, device, decision)

    @precondition(lambda self: bool(self.approvals))
    @rule(data=st.data())
    def the_expiry_job_expires_an_approval(self, data: st.DataObject) -> None:
        self.answer(data, EXPIRY, "expired")

    def answer(self, data: st.DataObject, device: Device, decision: Decision) -> None:
        approval_id = data.draw(st.sampled_from(sorted(self.approvals)), label="approval")
        approval = self.approvals[approval_id]

        def command(tenant: str) -> Any:
            return resolve_approval(
                self.app,
                self.actor(device, tenant),
                approval_id=approval_id,
                stream_id=approval.stream_id,
                run_id=approval.run_id,
                thread_id=self.runs[approval.run_id].thread_id if approval.run_id else None,
                decision=decision,
                roles=device.roles,
            )

        # Another tenant's device sees no such approval, whatever its state.
        self.expect(ApprovalNotFound, command(OTHER_TENANT))
        if approval.status != "pending":
            event("answered again")
            self.expect(AlreadyResolved, command(TENANT))
            return
        if approval.tier == "admin" and "admin" not in device.roles and decision != "expired":
            event("admin tier refused to a member")
            self.expect(AdminApprovalRequired, command(TENANT))
            return
        event(f"{approval.tier} approval {decision}")
        self.run(command(TENANT))
        approval.status, approval.by = decision, device.principal

    @precondition(lambda self: bool(self.direct_calls))
    @rule(data=st.data())
    def the_sweep_finishes_a_direct_call(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.direct_calls), label="call")
        receipt = self.run(self.app.calls.finish(Actor(TENANT), call_id))
        state = self.app.calls.get(TENANT, call_id)
        assert state is not None
        assert receipt == state.call.receipt

    # -- invariants ----------------------------------------------------------------------

    def call_of(self, approval: ModelApproval) -> Call:
        """The approval's call as its stream (direct call or run) folds it now."""
        get = self.app.runs.get if approval.run_id else self.app.calls.get
        state = get(TENANT, approval.stream_id)
        assert state is not None
        (call,) = [c for c in state.calls if c.call_id == approval.call_id]
        return call

    @invariant()
    def every_approval_is_resolved_at_most_once_as_the_model_says(self) -> None:
        resolved: dict[str, list[ApprovalResolved]] = {}
        for stream_id in {a.stream_id for a in self.approvals.values()}:
            for recorded in self.store.load(stream_id):
                if isinstance(recorded.data, ApprovalResolved):
                    resolved.setdefault(recorded.data.approval_id, []).append(recorded.data)
        for approval in self.approvals.values():
            resolutions = resolved.get(approval.id, [])
            if approval.status == "pending":
                assert resolutions == []
            else:
                assert [(r.decision, r.by) for r in resolutions] == [(approval.status, approval.by)]
            call = self.call_of(approval)
            assert (call.approval_id, call.approval_status) == (approval.id, approval.status)
            assert call.approval_tier == approval.tier

    @invariant()
    def a_refused_call_has_its_denied_receipt_and_never_ran(self) -> None:
        for approval in self.approvals.values():
            if approval.status in ("pending", "approved"):
                continue
            call = self.call_of(approval)
            assert self.executor.runs_of(call.call_id) == 0
            if approval.withdrawn:
                assert call.receipt is None
                continue
            assert call.receipt is not None
            assert (call.receipt.status, call.receipt.approval_id) == ("denied", approval.id)
            assert call.receipt.error == f"{approval.status} by {approval.by}"

    @invariant()
    def an_approved_call_ran_exactly_once_and_a_waiting_one_never(self) -> None:
        for approval in self.approvals.values():
            call = self.call_of(approval)
            ran = self.executor.runs_of(call.call_id)
            if approval.status == "pending":
                assert ran == 0 and call.receipt is None
            elif approval.status == "approved" and approval.run_id is None:
                # A direct call runs in the approver's request.
                assert ran == 1
                assert call.receipt is not None and call.receipt.status == "ok"
                assert call.receipt.result == fake_result(call.tool, call.call_id, call.arguments)
            elif approval.status == "approved":
                # A run's call runs when its worker next drives the run.
                assert ran == (0 if call.receipt is None else 1)

    @invariant()
    def a_run_waits_exactly_while_one_of_its_approvals_is_pending(self) -> None:
        for run in self.runs.values():
            state = self.app.runs.get(TENANT, run.id)
            assert state is not None
            pending = [
                a for a in self.approvals.values() if a.run_id == run.id and a.status == "pending"
            ]
            assert state.awaiting_approval == bool(pending)
            if run.cancelled:
                assert state.status == "cancelled" and not pending


ApprovalsMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEveryApprovalIsAnsweredOnceAndItsCallRunsAtMostOnce = ApprovalsMachine.TestCase
