"""Runs, pure: creation (thread, queue and credits), a worker's steps, cancellation, usage,
what a step means for the thread and the account, the folded state and the harness's next
step on it."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nome_core.accounts.errors import BillingInactive, InsufficientCredits
from nome_core.accounts.events import (
    CreditsConsumed,
    CreditsReleased,
    CreditsReserved,
    RunWaiting,
    SlotFreed,
    SlotTaken,
)
from nome_core.accounts.state import AccountState, Grant
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.bus import owned_by
from nome_core.events import Client, Decided, DomainEvent, Draft
from nome_core.runs import decide, effects
from nome_core.runs.commands import CancelRun, CreateRun, RecordStep
from nome_core.runs.errors import RunChanged, RunEnded, RunNotFound
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.runs.harness import (
    Done,
    ModelTurn,
    RequestApproval,
    RunTool,
    Start,
    Wait,
    next_step,
)
from nome_core.runs.state import Message, RunState, evolve
from nome_core.tenants.state import TenantState
from nome_core.threads import state as threads
from nome_core.threads.errors import RunInProgress, ThreadNotFound
from nome_core.threads.events import (
    MessageAdded,
    RunAdmitted,
    RunQueued,
    RunReleased,
    ThreadCreated,
    ThreadDeleted,
)
from nome_core.threads.state import ThreadState
from nome_core.tools.events import PolicyDecision, ToolCalled, ToolCompleted
from tests.support.streams import MemoryStream, receipt_of

TENANT = "00000000-0000-4000-8000-0000000000a1"
OTHER_TENANT = "00000000-0000-4000-8000-0000000000a2"
THREAD = "00000000-0000-4000-8000-0000000000b1"
RUN = "00000000-0000-4000-8000-0000000000c1"
EARLIER_RUN = "00000000-0000-4000-8000-0000000000c0"
NEXT_RUN = "00000000-0000-4000-8000-0000000000c2"
AGENT = AgentSnapshot(
    provider="scripted", model="scripted-1", instructions="Be brief.", tools=["clock.now"]
)
CLIENT = Client(surface="cli", version="1.2.3")
ALLOW = PolicyDecision(decision="allow", rule="policy", version=1)
DENY = PolicyDecision(decision="deny", rule="unknown_tool")
ASK = PolicyDecision(decision="approval_required", rule="approval:required", version=2)


# -- streams -----------------------------------------------------------------------------


def thread_stream(*drafts: DomainEvent) -> MemoryStream[ThreadState]:
    stream: MemoryStream[ThreadState] = MemoryStream(
        threads.evolve, stream_id=THREAD, tenant_id=TENANT, thread_id=THREAD
    )
    stream.append([ThreadCreated(title="Plans", metadata={}), *drafts])
    return stream


def idle_thread() -> ThreadState:
    return thread_stream().live()


def busy_thread(*queued: str) -> ThreadState:
    return thread_stream(
        RunAdmitted(run_id=EARLIER_RUN), *(RunQueued(run_id=r) for r in queued)
    ).live()


def created(input_text: str = "hello there", tier: str = "standard") -> RunCreated:
    return RunCreated(
        input=input_text,
        agent_id="agent-1",
        tier=tier,
        domain_hints=["maths"],
        client=CLIENT,
        agent=AGENT,
        creator_roles=["member"],
    )


def run_stream(*drafts: Decided, input_text: str = "hello there") -> MemoryStream[RunState]:
    stream: MemoryStream[RunState] = MemoryStream(
        evolve, stream_id=RUN, tenant_id=TENANT, thread_id=THREAD, run_id=RUN
    )
    stream.append([created(input_text), *drafts])
    return stream


def run_state(*drafts: Decided, input_text: str = "hello there") -> RunState:
    return run_stream(*drafts, input_text=input_text).live()


def called(call_id: str, tool: str = "clock.now", policy: PolicyDecision = ALLOW) -> Draft:
    return Draft(
        ToolCalled(call_id=call_id, tool=tool, arguments={"n": call_id}, policy=policy),
        f"w-{call_id}",
    )


def requested(call_id: str, approval_id: str, tier: str = "required") -> Draft:
    return Draft(
        ApprovalRequested(
            approval_id=approval_id,
            call_id=call_id,
            tool="http.fetch",
            arguments={},
            tier="admin" if tier == "admin" else "required",
            expires_at="2025-01-01T01:00:00.000000Z",
        ),
        f"w-{call_id}",
    )


def resolved(approval_id: str, decision: str = "approved") -> ApprovalResolved:
    return ApprovalResolved(
        approval_id=approval_id,
        decision="approved" if decision == "approved" else "denied",
        by="key-1",
        reason=None,
    )


def completed_call(
    state: RunState, call_id: str, status: str = "ok", result: object = None
) -> Draft:
    call = state.call(call_id)
    assert call is not None
    receipt = receipt_of(call, "ok" if status == "ok" else "error", result)
    return Draft(ToolCompleted(call_id=call_id, receipt=receipt), call.work_item_id)


def create_run(enqueue: bool = False, input_text: str = "hello there") -> CreateRun:
    return CreateRun(
        run_id=RUN,
        thread_id=THREAD,
        input=input_text,
        agent_id="agent-1",
        agent=AGENT,
        tier="deep",
        domain_hints=["maths"],
        enqueue=enqueue,
        creator_roles=["member", "operator"],
        client=CLIENT,
    )


FREE = TenantState(id=TENANT, name="acme", plan="free", created_at="2025-01-01T00:00:00.000000Z")
PRO = TenantState(id=TENANT, name="acme", plan="pro", created_at="2025-01-01T00:00:00.000000Z")
NOW = "2026-01-01T00:00:00.000000Z"
# A deep run reserves its tier's maximum.
DEEP_MOST = 50


def funded(available: int = 1000, *, active: tuple[str, ...] = ()) -> AccountState:
    grant = Grant(
        grant_id="g",
        kind="paid",
        amount=available,
        remaining=available,
        expires_at=None,
        granted_at=NOW,
    )
    return AccountState(tenant_id=TENANT, grants=(grant,), granted=available, active=active)


def create(
    cmd: CreateRun,
    thread: ThreadState | None,
    tenant: TenantState | None = FREE,
    account: AccountState | None = None,
) -> decide.Created:
    return decide.create(
        cmd, thread, tenant, funded() if account is None else account, now=NOW, grace_days=7
    )


# -- create ------------------------------------------------------------------------------


def test_a_new_run_puts_its_input_in_the_thread_as_a_user_message_labelled_with_the_run() -> None:
    thread_events = create(create_run(), idle_thread()).thread

    assert thread_events[0] == MessageAdded(
        message_id=decide.input_message_id(RUN),
        role="user",
        content="hello there",
        client=CLIENT,
        domain_hints=["maths"],
        tier="deep",
        tools_invoked=[],
        episode_id=RUN,
    )


def test_the_input_message_id_is_derived_from_the_run_alone() -> None:
    assert decide.input_message_id(RUN) == decide.input_message_id(RUN)
    assert decide.input_message_id(RUN) != decide.input_message_id(NEXT_RUN)


def test_a_run_on_an_idle_thread_is_admitted_and_takes_a_free_slot_at_once() -> None:
    created = create(create_run(), idle_thread())

    assert created.thread[1:] == [RunAdmitted(run_id=RUN, slotted=True)]
    assert created.account == [
        CreditsReserved(run_id=RUN, amount=DEEP_MOST),
        RunWaiting(run_id=RUN),
        SlotTaken(run_id=RUN),
    ]


def test_a_run_admitted_while_the_tenants_slots_are_taken_waits_for_one() -> None:
    busy = funded(active=("r1", "r2", "r3", "r4"))  # the free plan's four

    created = create(create_run(), idle_thread(), FREE, busy)

    assert created.account == [
        CreditsReserved(run_id=RUN, amount=DEEP_MOST),
        RunWaiting(run_id=RUN),
    ]


@pytest.mark.parametrize("queued", [(), (NEXT_RUN,)], ids=["nobody waiting", "one waiting"])
def test_a_run_on_a_busy_thread_asked_to_wait_is_queued_holding_only_its_reservation(
    queued: tuple[str, ...],
) -> None:
    created = create(create_run(enqueue=True), busy_thread(*queued))

    assert created.thread[1:] == [RunQueued(run_id=RUN)]
    assert created.account == [CreditsReserved(run_id=RUN, amount=DEEP_MOST)]


def test_a_run_on_a_busy_thread_not_asked_to_wait_is_refused_naming_the_active_run() -> None:
    with pytest.raises(RunInProgress) as refused:
        create(create_run(enqueue=False), busy_thread())

    assert refused.value.code == "run_in_progress"
    assert refused.value.details == {"active_run_id": EARLIER_RUN}


def test_the_run_created_event_snapshots_the_agent_tier_roles_and_client() -> None:
    run_events = create(create_run(), idle_thread()).run

    assert run_events == [
        RunCreated(
            input="hello there",
            agent_id="agent-1",
            tier="deep",
            domain_hints=["maths"],
            client=CLIENT,
            agent=AGENT,
            creator_roles=["member", "operator"],
        )
    ]


@pytest.mark.parametrize(
    ("tenant", "account", "available"),
    [
        (FREE, AccountState(tenant_id=TENANT), 0),
        (FREE, funded(DEEP_MOST - 1), DEEP_MOST - 1),
        (None, funded(10), 10),
        (PRO, msgspec.structs.replace(funded(100), reservations={"r": 60}), 40),
    ],
    ids=["nothing granted", "one short", "unknown tenant", "the rest reserved"],
)
def test_a_tenant_without_the_runs_most_available_cannot_start_it(
    tenant: TenantState | None, account: AccountState, available: int
) -> None:
    with pytest.raises(InsufficientCredits) as refused:
        create(create_run(), idle_thread(), tenant, account)

    assert refused.value.code == "insufficient_credits"
    assert refused.value.details == {"required": DEEP_MOST, "available": available}


def test_a_tenant_with_exactly_the_runs_most_available_can_start_it() -> None:
    created = create(create_run(), idle_thread(), FREE, funded(DEEP_MOST))

    assert created.thread[1:] == [RunAdmitted(run_id=RUN, slotted=True)]
    assert created.account[0] == CreditsReserved(run_id=RUN, amount=DEEP_MOST)


@pytest.mark.parametrize(
    ("status", "period_end"),
    [("canceled", None), ("past_due", "2025-12-20T00:00:00.000000Z")],
    ids=["canceled", "past due beyond its grace"],
)
def test_a_tenant_whose_billing_is_inactive_starts_no_run(
    status: str, period_end: str | None
) -> None:
    tenant = msgspec.structs.replace(FREE, billing=status, period_end=period_end)

    with pytest.raises(BillingInactive) as refused:
        create(create_run(), idle_thread(), tenant)

    assert refused.value.code == "billing_inactive"


def test_a_past_due_tenant_within_its_grace_still_starts_runs() -> None:
    tenant = msgspec.structs.replace(
        FREE, billing="past_due", period_end="2025-12-28T00:00:00.000000Z"
    )

    assert create(create_run(), idle_thread(), tenant).run


def deleted_thread() -> ThreadState:
    return thread_stream(ThreadDeleted()).live()


@pytest.mark.parametrize(
    "thread",
    [None, deleted_thread(), owned_by(idle_thread(), OTHER_TENANT)],
    ids=["never existed", "deleted", "another tenant's"],
)
def test_a_run_on_a_thread_that_is_not_there_is_not_found(thread: ThreadState | None) -> None:
    with pytest.raises(ThreadNotFound):
        create(create_run(), thread)


# -- a worker's step ---------------------------------------------------------------------


def test_a_step_decided_on_the_run_as_it_stands_is_recorded_as_decided() -> None:
    state = run_state(RunStarted(model="scripted-1"))
    drafts = [Draft(MessageDelta(message_id="m", text="hi"), "w")]

    step = RecordStep(run_id=RUN, thread_id=THREAD, seen=state.event_count, drafts=drafts)

    assert decide.record(step, state) == drafts


@pytest.mark.parametrize("seen", [1, 3], ids=["behind", "ahead"])
def test_a_step_decided_on_a_run_that_has_moved_on_is_refused_as_run_changed(seen: int) -> None:
    state = run_state(RunStarted(model="scripted-1"))
    assert state.event_count == 2

    with pytest.raises(RunChanged):
        decide.record(RecordStep(run_id=RUN, thread_id=THREAD, seen=seen, drafts=[]), state)


def test_a_step_on_a_run_that_is_not_there_is_refused_as_run_changed() -> None:
    with pytest.raises(RunChanged):
        decide.record(RecordStep(run_id=RUN, thread_id=THREAD, seen=0, drafts=[]), None)


def test_starting_a_pending_run_records_the_model_and_starting_it_again_records_nothing() -> None:
    stream = run_stream()

    first = decide.start(stream.live(), "scripted-1")
    stream.append(first)

    assert first == [RunStarted(model="scripted-1")]
    assert decide.start(stream.live(), "scripted-1") == []


def test_completing_a_run_records_its_output_and_the_words_in_and_out() -> None:
    state = run_state(RunStarted(model="m"), input_text="one two  three")

    assert decide.complete(state, "four five") == [
        RunCompleted(usage=Usage(input_tokens=3, output_tokens=2, credits=1), output="four five")
    ]


def test_failing_a_run_records_the_error() -> None:
    state = run_state(RunStarted(model="m"))

    # What it used ("hello there": two words in, none out) costs the least a run can.
    assert decide.fail(state, "model_error", "timed out") == [
        RunFailed(
            error=ErrorInfo(code="model_error", message="timed out"),
            usage=Usage(input_tokens=2, output_tokens=0, credits=1),
        )
    ]


ENDS: list[DomainEvent] = [
    RunCompleted(usage=Usage(), output=""),
    RunFailed(error=ErrorInfo(code="x", message="y")),
    RunCancelled(by="someone", reason=None),
]
END_STATUS = ["completed", "failed", "cancelled"]
ENDED = list(zip(ENDS, END_STATUS, strict=True))


@pytest.mark.parametrize(("end", "status"), ENDED, ids=END_STATUS)
def test_completing_or_failing_an_ended_run_is_refused_as_run_ended(
    end: DomainEvent, status: str
) -> None:
    state = run_state(RunStarted(model="m"), end)

    with pytest.raises(RunEnded, match=status):
        decide.complete(state, "late")
    with pytest.raises(RunEnded, match=status):
        decide.fail(state, "model_error", "late")


# -- cancel ------------------------------------------------------------------------------


def cancel(state: RunState | None) -> list[Decided]:
    return decide.cancel(CancelRun(run_id=RUN, by="key-9", reason="changed my mind"), state)


def test_cancelling_a_pending_run_records_who_and_why_and_that_it_cost_nothing() -> None:
    assert cancel(run_state()) == [RunCancelled(by="key-9", reason="changed my mind")]


def test_cancelling_an_active_run_records_what_it_used_at_least_the_least_a_run_costs() -> None:
    used = Usage(input_tokens=2, output_tokens=0, credits=1)

    assert cancel(run_state(RunStarted(model="m"))) == [
        RunCancelled(by="key-9", reason="changed my mind", usage=used)
    ]


def test_cancelling_a_run_withdraws_its_pending_approvals_and_only_those() -> None:
    stream = run_stream(
        RunStarted(model="m"),
        called("c1", "http.fetch", ASK),
        called("c2", "http.fetch", ASK),
        called("c3", "clock.now", ALLOW),
        requested("c1", "a1"),
    )
    stream.append([Draft(resolved("a1"), "w-c1"), requested("c2", "a2")])

    decided = cancel(stream.live())

    assert decided == [
        Draft(
            ApprovalResolved(
                approval_id="a2", decision="denied", by="key-9", reason="the run was cancelled"
            ),
            "w-c2",
        ),
        RunCancelled(
            by="key-9",
            reason="changed my mind",
            usage=Usage(input_tokens=2, output_tokens=0, credits=1),
        ),
    ]
    stream.append(decided)
    after = stream.live()
    assert not after.awaiting_approval
    assert [c.approval_status for c in after.calls] == ["approved", "denied", None]


def test_cancelling_a_cancelled_run_again_records_nothing() -> None:
    stream = run_stream()
    stream.append(cancel(stream.live()))

    assert cancel(stream.live()) == []


@pytest.mark.parametrize(("end", "status"), ENDED[:2], ids=END_STATUS[:2])
def test_cancelling_a_run_that_completed_or_failed_is_refused_as_run_ended(
    end: DomainEvent, status: str
) -> None:
    with pytest.raises(RunEnded, match=status):
        cancel(run_state(RunStarted(model="m"), end))


@pytest.mark.parametrize(
    "state", [None, owned_by(run_state(), OTHER_TENANT)], ids=["unknown", "another tenant's"]
)
def test_cancelling_a_run_that_is_not_there_is_not_found(state: RunState | None) -> None:
    with pytest.raises(RunNotFound):
        cancel(state)


# -- usage and cost ----------------------------------------------------------------------


def test_tokens_are_whitespace_separated_words_of_any_kind() -> None:
    used = decide.usage("standard", "  Grüße\n👋\tnaïve ", "a  b")

    assert (used.input_tokens, used.output_tokens) == (3, 2)


@pytest.mark.parametrize(
    ("tier", "words", "credits"),
    [
        ("fast", 1000, 1),
        ("fast", 1001, 2),
        ("standard", 500, 1),
        ("standard", 501, 2),
        ("standard", 2000, 4),
        ("deep", 200, 1),
        ("deep", 201, 2),
        ("deep", 1000, 5),
        ("no-such-tier", 1000, 2),
        ("deep", 0, 1),
    ],
)
def test_credits_are_the_tiers_price_per_thousand_tokens_rounded_up_and_at_least_one(
    tier: str, words: int, credits: int
) -> None:
    assert decide.usage(tier, "w " * words, "").credits == credits


@given(tokens=st.integers(0, 100_000), more=st.integers(0, 10_000))
def test_credits_grow_with_tokens_and_with_the_tier(tokens: int, more: int) -> None:
    def cost(tier: str, n: int) -> int:
        return decide.usage(tier, "w " * n, "").credits

    for tier in ("fast", "standard", "deep"):
        assert 1 <= cost(tier, tokens) <= cost(tier, tokens + more)
    assert cost("fast", tokens) <= cost("standard", tokens) <= cost("deep", tokens)
    # Never more than the tier's maximum: what a run of it reserves.
    assert cost("deep", tokens) == min(50, max(1, math.ceil(tokens * 5 / 1000)))


# -- effects: the thread and the account -------------------------------------------------


def answer(text: str = "the answer") -> Draft:
    return Draft(MessageCompleted(message_id="m-1", role="assistant", content=text), "w-1")


def test_an_assistant_answer_is_added_to_the_thread_labelled_with_the_run_and_its_tools() -> None:
    run = run_state(RunStarted(model="m"), called("c1", "clock.now"), called("c2", "math.evaluate"))

    added = effects.thread_effects(run, busy_thread(), [answer()])

    assert added == [
        MessageAdded(
            message_id="m-1",
            role="assistant",
            content="the answer",
            client=CLIENT,
            domain_hints=["maths"],
            tier="standard",
            tools_invoked=["clock.now", "math.evaluate"],
            episode_id=RUN,
        )
    ]


def test_deltas_and_tool_calls_add_nothing_to_the_thread() -> None:
    run = run_state(RunStarted(model="m"))
    drafts: list[Decided] = [Draft(MessageDelta(message_id="m", text="x"), "w"), called("c1")]

    assert effects.thread_effects(run, busy_thread(), drafts) == []


def test_a_completed_note_lands_in_the_thread_with_its_receipt() -> None:
    stream = run_stream(RunStarted(model="m"))
    stream.append(
        [
            Draft(
                ToolCalled(
                    call_id="c1", tool="thread.note", arguments={"text": "remember"}, policy=ALLOW
                ),
                "w-c1",
            )
        ]
    )
    run = stream.live()
    done = completed_call(run, "c1", result={"note_id": "n-1"})

    added = effects.thread_effects(run, busy_thread(), [done])

    assert added == [
        MessageAdded(
            message_id="n-1",
            role="system",
            content="remember",
            tools_invoked=["thread.note"],
            episode_id=RUN,
        )
    ]


def test_a_note_that_failed_adds_nothing_to_the_thread() -> None:
    stream = run_stream(RunStarted(model="m"))
    stream.append(
        [
            Draft(
                ToolCalled(call_id="c1", tool="thread.note", arguments={"text": "x"}, policy=ALLOW),
                "w",
            )
        ]
    )
    run = stream.live()

    assert effects.thread_effects(run, busy_thread(), [completed_call(run, "c1", "error")]) == []


def active_thread(*queued: str) -> ThreadState:
    return thread_stream(RunAdmitted(run_id=RUN), *(RunQueued(run_id=r) for r in queued)).live()


@pytest.mark.parametrize("end", ENDS, ids=END_STATUS)
def test_a_runs_end_frees_its_thread_and_admits_the_next_queued_run(end: DomainEvent) -> None:
    run = run_state(RunStarted(model="m"))

    assert effects.thread_effects(run, active_thread(NEXT_RUN, EARLIER_RUN), [end]) == [
        RunReleased(run_id=RUN),
        RunAdmitted(run_id=NEXT_RUN, slotted=True),
    ]


def test_a_runs_end_with_nobody_waiting_only_frees_the_thread() -> None:
    assert effects.thread_effects(run_state(), active_thread(), [ENDS[2]]) == [
        RunReleased(run_id=RUN)
    ]


def test_a_queued_run_that_ends_leaves_the_queue_without_admitting_anyone() -> None:
    thread = busy_thread(RUN, NEXT_RUN)

    assert effects.thread_effects(run_state(), thread, [ENDS[2]]) == [RunReleased(run_id=RUN)]


def test_a_deleted_thread_gets_no_answer_but_its_run_is_still_released() -> None:
    thread = thread_stream(RunAdmitted(run_id=RUN), RunQueued(run_id=NEXT_RUN), ThreadDeleted())
    run = run_state(RunStarted(model="m"))
    end = RunCompleted(usage=Usage(), output="the answer")

    assert effects.thread_effects(run, thread.live(), [answer(), end]) == [
        RunReleased(run_id=RUN),
        # Admitted so that the worker finds it, and cancels it: its thread is gone.
        RunAdmitted(run_id=NEXT_RUN, slotted=True),
    ]


def test_a_run_of_a_thread_that_never_existed_changes_no_thread() -> None:
    assert effects.thread_effects(run_state(), None, [answer(), ENDS[0]]) == []


def test_a_completed_run_consumes_its_cost_releases_the_rest_and_frees_its_slot() -> None:
    end = RunCompleted(usage=Usage(input_tokens=1, output_tokens=1, credits=7), output="x")
    account = msgspec.structs.replace(funded(), reservations={RUN: 20}, active=(RUN,))

    assert effects.account_effects(run_state(), account, FREE, [answer(), end], []) == [
        CreditsConsumed(run_id=RUN, amount=7),
        CreditsReleased(run_id=RUN, amount=13),
        SlotFreed(run_id=RUN),
    ]


def test_a_run_that_ends_hands_its_slot_to_the_oldest_waiting_run() -> None:
    end = ENDS[1]
    account = msgspec.structs.replace(
        funded(), reservations={RUN: 20}, active=(RUN, "r2", "r3", "r4"), waiting=("w1", "w2")
    )

    assert effects.account_effects(run_state(), account, FREE, [end], []) == [
        CreditsReleased(run_id=RUN, amount=20),
        SlotFreed(run_id=RUN),
        SlotTaken(run_id="w1"),
    ]


def test_a_run_its_end_admits_on_the_thread_queues_behind_runs_already_waiting() -> None:
    account = msgspec.structs.replace(
        funded(), reservations={RUN: 20}, active=(RUN, "r2", "r3", "r4"), waiting=("w1",)
    )
    admitted = [RunReleased(run_id=RUN), RunAdmitted(run_id=NEXT_RUN, slotted=True)]

    assert effects.account_effects(run_state(), account, FREE, [ENDS[2]], admitted) == [
        CreditsReleased(run_id=RUN, amount=20),
        SlotFreed(run_id=RUN),
        RunWaiting(run_id=NEXT_RUN),
        SlotTaken(run_id="w1"),
    ]


def test_a_step_that_does_not_end_the_run_touches_no_account() -> None:
    account = msgspec.structs.replace(funded(), reservations={RUN: 20}, active=(RUN,))

    assert effects.account_effects(run_state(), account, FREE, [answer()], []) == []


def test_a_step_ends_the_run_exactly_when_it_holds_a_terminal_event() -> None:
    for end in ENDS:
        assert effects.ends([answer(), end])
    assert not effects.ends([answer(), called("c1"), RunStarted(model="m")])
    assert not effects.ends([])


# -- the folded state --------------------------------------------------------------------


def test_a_created_run_takes_its_ids_tenant_and_time_from_the_event() -> None:
    stream = run_stream()

    assert stream.live() == RunState(
        id=RUN,
        tenant_id=TENANT,
        thread_id=THREAD,
        agent_id="agent-1",
        input="hello there",
        tier="standard",
        domain_hints=["maths"],
        client=CLIENT,
        agent=AGENT,
        creator_roles=["member"],
        created_at=stream.events[0].at,
        event_count=1,
    )


def test_a_started_run_is_active_with_its_model_and_start_time() -> None:
    stream = run_stream(RunStarted(model="scripted-1"))
    state = stream.live()

    assert (state.status, state.model, state.started_at) == (
        "active",
        "scripted-1",
        stream.events[1].at,
    )


def test_deltas_accumulate_and_the_completed_content_is_authoritative() -> None:
    stream = run_stream(
        RunStarted(model="m"),
        Draft(MessageDelta(message_id="m-1", text="Hel"), "w-1"),
        Draft(MessageDelta(message_id="m-1", text="lo"), "w-1"),
        Draft(MessageDelta(message_id="m-2", text="Other"), "w-2"),
    )
    assert stream.live().messages == (
        Message(message_id="m-1", work_item_id="w-1", text="Hello"),
        Message(message_id="m-2", work_item_id="w-2", text="Other"),
    )

    stream.append(
        [Draft(MessageCompleted(message_id="m-1", role="assistant", content="Hi!"), "w-1")]
    )

    assert stream.live().messages == (
        Message(message_id="m-2", work_item_id="w-2", text="Other"),
        Message(message_id="m-1", work_item_id="w-1", text="Hi!", completed=True),
    )


def test_a_run_folds_each_call_with_its_approval_and_receipt() -> None:
    stream = run_stream(RunStarted(model="m"), called("c1", "http.fetch", ASK), called("c2"))
    stream.append([requested("c1", "a1", "admin")])
    waiting = stream.live()
    stream.append([Draft(resolved("a1"), "w-c1"), completed_call(waiting, "c1", result={"v": 1})])
    state = stream.live()

    first, second = state.calls
    assert waiting.awaiting_approval and not state.awaiting_approval
    assert (first.call_id, first.tool, first.work_item_id, first.policy) == (
        "c1",
        "http.fetch",
        "w-c1",
        ASK,
    )
    assert (first.approval_id, first.approval_tier, first.approval_status) == (
        "a1",
        "admin",
        "approved",
    )
    assert first.approval_expires_at == "2025-01-01T01:00:00.000000Z"
    assert first.receipt is not None and first.receipt.result == {"v": 1}
    assert (second.call_id, second.receipt, second.approval_id) == ("c2", None, None)
    assert state.call("c2") == second
    assert state.call("nope") is None


def test_each_end_sets_its_status_end_time_and_what_it_carries() -> None:
    usage = Usage(input_tokens=2, output_tokens=3, credits=1)
    error = ErrorInfo(code="model_error", message="boom")
    ends: list[tuple[DomainEvent, dict[str, object]]] = [
        (RunCompleted(usage=usage, output="out"), {"usage": usage, "output": "out"}),
        (RunFailed(error=error), {"error": error}),
        (RunCancelled(by="key-9", reason="r"), {"cancelled_by": "key-9"}),
    ]
    for (end, carried), status in zip(ends, END_STATUS, strict=True):
        stream = run_stream(RunStarted(model="m"), end)
        state = stream.live()

        assert state.status == status and state.terminal
        assert state.ended_at == stream.events[-1].at
        for field, value in carried.items():
            assert getattr(state, field) == value


def test_every_event_of_the_runs_stream_counts_even_one_it_does_not_fold() -> None:
    stream = run_stream(RunStarted(model="m"), ThreadDeleted(), called("c1"))

    assert stream.live().event_count == len(stream.events) == 4


def test_events_before_the_runs_creation_fold_to_nothing() -> None:
    stream: MemoryStream[RunState] = MemoryStream(evolve, stream_id=RUN, tenant_id=TENANT)

    (event,) = stream.append([RunStarted(model="m")])

    assert evolve(None, event) is None


# -- the harness's next step -------------------------------------------------------------


def test_a_pending_run_starts_and_an_ended_one_is_done() -> None:
    assert next_step(run_state()) == Start()
    for end in ENDS:
        assert next_step(run_state(RunStarted(model="m"), end)) == Done()


def test_a_started_run_without_calls_asks_the_model_for_a_fresh_turn() -> None:
    assert next_step(run_state(RunStarted(model="m"))) == ModelTurn(None)


def test_a_half_written_message_is_continued_by_the_next_model_turn() -> None:
    state = run_state(
        RunStarted(model="m"), Draft(MessageDelta(message_id="m-1", text="Hal"), "w-1")
    )

    assert next_step(state) == ModelTurn(state.messages[0])


@pytest.mark.parametrize("policy", [ALLOW, DENY], ids=["allowed", "denied"])
def test_a_call_that_needs_no_approval_runs_next(policy: PolicyDecision) -> None:
    # A denied call "runs" too: the executor writes its denied receipt without running it.
    state = run_state(RunStarted(model="m"), called("c1", policy=policy))

    assert next_step(state) == RunTool(state.calls[0])


def test_a_call_that_needs_approval_asks_for_it_then_waits_until_it_is_answered() -> None:
    stream = run_stream(RunStarted(model="m"), called("c1", "http.fetch", ASK))
    assert next_step(stream.live()) == RequestApproval(stream.live().calls[0])

    stream.append([requested("c1", "a1")])
    assert next_step(stream.live()) == Wait()

    stream.append([Draft(resolved("a1"), "w-c1")])
    assert next_step(stream.live()) == RunTool(stream.live().calls[0])


def test_calls_run_in_order_so_a_waiting_call_holds_back_the_ones_after_it() -> None:
    stream = run_stream(RunStarted(model="m"), called("c1", "http.fetch", ASK), called("c2"))
    stream.append([requested("c1", "a1")])

    assert next_step(stream.live()) == Wait()


def test_a_denied_approval_is_answered_with_its_receipt_and_the_run_moves_on() -> None:
    stream = run_stream(RunStarted(model="m"), called("c1", "http.fetch", ASK), called("c2"))
    stream.append([requested("c1", "a1")])
    stream.append(
        [Draft(resolved("a1", "denied"), "w-c1"), completed_call(stream.live(), "c1", "error")]
    )

    assert next_step(stream.live()) == RunTool(stream.live().calls[1])


def test_once_every_call_has_its_receipt_the_model_takes_its_next_turn() -> None:
    stream = run_stream(RunStarted(model="m"), called("c1"), called("c2", policy=DENY))
    for call_id in ("c1", "c2"):
        stream.append([completed_call(stream.live(), call_id)])

    assert next_step(stream.live()) == ModelTurn(None)
