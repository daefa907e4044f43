"""Approvals, pure: asked for a waiting call, answered exactly once (the first answer wins),
admin-tier answers need the admin role, a refusal leaves a denied receipt, and the calls of
a stream fold their approvals."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nome_core.approvals import decide
from nome_core.approvals.commands import ResolveApproval
from nome_core.approvals.errors import AdminApprovalRequired, AlreadyResolved, ApprovalNotFound
from nome_core.approvals.events import ApprovalRequested, ApprovalResolved
from nome_core.approvals.state import evolve_calls, pending
from nome_core.calls.state import DirectCall, evolve
from nome_core.events import Client, Decided, Draft, payload
from nome_core.runs.events import AgentSnapshot, RunCreated
from nome_core.runs.state import RunState
from nome_core.runs.state import evolve as evolve_run
from nome_core.threads.events import ThreadRenamed
from nome_core.tools.events import PolicyDecision, ToolCalled, ToolCompleted
from nome_core.tools.state import Call
from tests.support.streams import MemoryStream, receipt_of

TENANT = "00000000-0000-4000-8000-0000000000a1"
CALL = "00000000-0000-4000-8000-0000000000d1"
RUN = "00000000-0000-4000-8000-0000000000c1"
NOW = "2025-01-01T00:00:00.000000Z"
Decision = Literal["approved", "denied", "expired"]
DECISIONS: tuple[Decision, ...] = ("approved", "denied", "expired")
ARGUMENTS = {"url": "https://example.com/ünï", "headers": {"b": 1, "a": [1.5, None]}}


def policy(tier: str) -> PolicyDecision:
    return PolicyDecision(decision="approval_required", rule=f"approval:{tier}", version=3)


def call(tier: str = "required", call_id: str = CALL) -> Call:
    return Call(
        call_id=call_id,
        work_item_id=f"w-{call_id}",
        tool="http.fetch",
        arguments=ARGUMENTS,
        policy=policy(tier),
    )


def direct_call(tier: str = "required", *, asked: bool = True) -> MemoryStream[DirectCall]:
    """A direct call whose approval `a1` waits (or has not been asked for yet)."""
    stream: MemoryStream[DirectCall] = MemoryStream(evolve, stream_id=CALL, tenant_id=TENANT)
    waiting = call(tier)
    called = ToolCalled(
        call_id=CALL, tool=waiting.tool, arguments=waiting.arguments, policy=waiting.policy
    )
    stream.append([Draft(called, waiting.work_item_id)])
    if asked:
        stream.append(decide.request(waiting, "a1", NOW, 60))
    return stream


def resolve_cmd(
    decision: Decision,
    roles: frozenset[str] = frozenset({"member"}),
    *,
    approval_id: str = "a1",
    reason: str | None = None,
    run_id: str | None = None,
) -> ResolveApproval:
    return ResolveApproval(
        approval_id=approval_id,
        stream_id=CALL,
        run_id=run_id,
        thread_id=None,
        decision=decision,
        reason=reason,
        roles=roles,
        receipt_id="r-9",
        at="2025-01-01T00:00:30.000000Z",
    )


# -- request -----------------------------------------------------------------------------


def test_an_approval_request_names_the_call_and_expires_after_its_time_to_live() -> None:
    (draft,) = decide.request(call(), "a1", "2025-01-01T23:59:30.250000Z", 45)

    assert draft == Draft(
        ApprovalRequested(
            approval_id="a1",
            call_id=CALL,
            tool="http.fetch",
            arguments=ARGUMENTS,
            tier="required",
            expires_at="2025-01-02T00:00:15.250000Z",
        ),
        f"w-{CALL}",
    )


@pytest.mark.parametrize(
    ("rule", "tier"),
    [("approval:admin", "admin"), ("approval:required", "required"), ("other", "required")],
)
def test_the_approval_tier_follows_the_rule_that_asked_for_it(rule: str, tier: str) -> None:
    asking = Call(
        call_id=CALL,
        work_item_id="w",
        tool="t",
        arguments={},
        policy=PolicyDecision(decision="approval_required", rule=rule),
    )

    (draft,) = decide.request(asking, "a1", NOW, 1)

    requested = payload(draft)
    assert isinstance(requested, ApprovalRequested)
    assert requested.tier == tier


# -- resolve -----------------------------------------------------------------------------


def test_approving_records_the_answer_and_leaves_the_call_to_run() -> None:
    stream = direct_call()

    decided = decide.resolve(resolve_cmd("approved", reason="fine"), stream.live(), "key-1")

    assert decided == [
        Draft(
            ApprovalResolved(approval_id="a1", decision="approved", by="key-1", reason="fine"),
            f"w-{CALL}",
        )
    ]
    stream.append(decided)
    answered = stream.live().call
    assert answered.approval_status == "approved" and answered.receipt is None


def canonical_sha256(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("decision", ["denied", "expired"])
def test_a_refusal_records_the_answer_and_the_calls_denied_receipt_together(
    decision: Decision,
) -> None:
    stream = direct_call()

    answer, completed = decide.resolve(
        resolve_cmd(decision, reason="not now", run_id=RUN), stream.live(), "key-1"
    )

    assert answer == Draft(
        ApprovalResolved(approval_id="a1", decision=decision, by="key-1", reason="not now"),
        f"w-{CALL}",
    )
    assert isinstance(completed, Draft) and completed.work_item_id == f"w-{CALL}"
    done = completed.data
    assert isinstance(done, ToolCompleted)
    receipt = done.receipt
    assert (done.call_id, receipt.call_id, receipt.tool) == (CALL, CALL, "http.fetch")
    assert (receipt.id, receipt.run_id, receipt.approval_id) == ("r-9", RUN, "a1")
    assert (receipt.status, receipt.result, receipt.result_sha256) == ("denied", None, None)
    assert receipt.error == f"{decision} by key-1: not now"
    assert receipt.started_at == receipt.finished_at == "2025-01-01T00:00:30.000000Z"
    assert receipt.arguments_sha256 == canonical_sha256(ARGUMENTS)
    stream.append([answer, completed])
    assert stream.live().call.receipt == receipt


def test_a_refusal_by_nobody_without_a_reason_says_so() -> None:
    _, completed = decide.resolve(resolve_cmd("denied"), direct_call().live(), None)

    done = payload(completed)
    assert isinstance(done, ToolCompleted)
    assert done.receipt.error == "denied by nobody"


@pytest.mark.parametrize("first", DECISIONS)
@pytest.mark.parametrize("second", DECISIONS)
def test_an_answered_approval_cannot_be_answered_again(first: Decision, second: Decision) -> None:
    stream = direct_call()
    stream.append(decide.resolve(resolve_cmd(first), stream.live(), "key-1"))

    with pytest.raises(AlreadyResolved, match=first) as refused:
        decide.resolve(resolve_cmd(second, frozenset({"admin"})), stream.live(), "key-2")

    assert refused.value.code == "already_resolved"


@pytest.mark.parametrize("decision", ["approved", "denied"])
def test_an_admin_tier_approval_cannot_be_answered_without_the_admin_role(
    decision: Decision,
) -> None:
    state = direct_call("admin").live()

    with pytest.raises(AdminApprovalRequired):
        decide.resolve(resolve_cmd(decision, frozenset({"member", "operator"})), state, "key-1")


@pytest.mark.parametrize("decision", DECISIONS)
def test_an_admin_answers_an_admin_tier_approval(decision: Decision) -> None:
    decided = decide.resolve(
        resolve_cmd(decision, frozenset({"admin"})), direct_call("admin").live(), "k"
    )

    answer = payload(decided[0])
    assert isinstance(answer, ApprovalResolved)
    assert answer.decision == decision


def test_an_admin_tier_approval_expires_whoever_expires_it() -> None:
    decided = decide.resolve(resolve_cmd("expired", frozenset()), direct_call("admin").live(), None)

    assert [type(payload(d)) for d in decided] == [ApprovalResolved, ToolCompleted]


@pytest.mark.parametrize(
    ("stream", "approval_id"),
    [
        (None, "a1"),
        (direct_call(asked=False), "a1"),
        (direct_call(), "a2"),
    ],
    ids=["no stream", "never asked", "another approval"],
)
def test_answering_an_approval_that_is_not_there_is_not_found(
    stream: MemoryStream[DirectCall] | None, approval_id: str
) -> None:
    state = stream.live() if stream else None

    with pytest.raises(ApprovalNotFound):
        decide.resolve(resolve_cmd("approved", approval_id=approval_id), state, "key-1")


def test_a_runs_call_is_answered_the_same_way() -> None:
    run: MemoryStream[RunState] = MemoryStream(
        evolve_run, stream_id=RUN, tenant_id=TENANT, thread_id="t", run_id=RUN
    )

    run.append(
        [
            RunCreated(
                input="",
                agent_id="a",
                tier="standard",
                domain_hints=[],
                client=Client(),
                agent=AgentSnapshot(provider="scripted", model="m", instructions="", tools=[]),
            ),
            Draft(
                ToolCalled(
                    call_id=CALL, tool="http.fetch", arguments={}, policy=policy("required")
                ),
                "w",
            ),
        ]
    )
    run.append(decide.request(run.live().calls[0], "a1", NOW, 60))
    run.append(decide.resolve(resolve_cmd("denied", run_id=RUN), run.live(), "key-1"))

    (answered,) = run.live().calls
    assert answered.approval_status == "denied"
    assert answered.receipt is not None and answered.receipt.status == "denied"


attempts = st.lists(
    st.tuples(st.sampled_from(DECISIONS), st.sampled_from(["member", "admin"])),
    min_size=1,
    max_size=6,
)


@given(tier=st.sampled_from(["required", "admin"]), tries=attempts)
def test_of_many_answers_the_first_one_allowed_wins_and_every_later_one_is_refused(
    tier: str, tries: list[tuple[Decision, str]]
) -> None:
    stream = direct_call(tier)
    winner: Decision | None = None
    for decision, role in tries:
        allowed = tier == "required" or role == "admin" or decision == "expired"
        cmd = resolve_cmd(decision, frozenset({role}))
        if winner is not None:
            with pytest.raises(AlreadyResolved):
                decide.resolve(cmd, stream.live(), role)
        elif not allowed:
            with pytest.raises(AdminApprovalRequired):
                decide.resolve(cmd, stream.live(), role)
        else:
            stream.append(decide.resolve(cmd, stream.live(), role))
            winner = decision

    answers = [e.data for e in stream.events if isinstance(e.data, ApprovalResolved)]
    receipts = [e.data.receipt for e in stream.events if isinstance(e.data, ToolCompleted)]
    final = stream.live().call
    if winner is None:
        assert answers == [] and final.approval_status == "pending"
    else:
        assert [a.decision for a in answers] == [winner]
        assert final.approval_status == winner
        assert [r.status for r in receipts] == ([] if winner == "approved" else ["denied"])


# -- withdraw ----------------------------------------------------------------------------


def calls_folded(*drafts: Decided) -> tuple[Call, ...]:
    stream: MemoryStream[DirectCall] = MemoryStream(evolve, stream_id=CALL, tenant_id=TENANT)
    stream.append(list(drafts))
    return stream.live().calls


def called(call_id: str) -> Draft:
    return Draft(
        ToolCalled(call_id=call_id, tool="http.fetch", arguments={}, policy=policy("required")),
        f"w-{call_id}",
    )


def test_withdrawing_closes_every_pending_approval_as_denied_and_nothing_else() -> None:
    calls = calls_folded(
        called("c1"),
        called("c2"),
        called("c3"),
        called("c4"),
        *decide.request(call(call_id="c1"), "a1", NOW, 60),
        *decide.request(call(call_id="c2"), "a2", NOW, 60),
        *decide.request(call(call_id="c4"), "a4", NOW, 60),
        Draft(ApprovalResolved(approval_id="a2", decision="approved", by="k", reason=None), "w"),
    )

    assert decide.withdraw(calls, "key-9", "the run was cancelled") == [
        Draft(
            ApprovalResolved(
                approval_id=approval_id,
                decision="denied",
                by="key-9",
                reason="the run was cancelled",
            ),
            f"w-{call_id}",
        )
        for call_id, approval_id in (("c1", "a1"), ("c4", "a4"))
    ]


def test_withdrawing_with_nothing_pending_records_nothing() -> None:
    assert decide.withdraw((), None, "x") == []
    assert decide.withdraw(calls_folded(called("c1")), None, "x") == []


# -- the calls of a stream ---------------------------------------------------------------


def test_a_called_tool_is_added_with_its_work_item_and_policy_and_nothing_else() -> None:
    (folded,) = calls_folded(called("c1"))

    assert folded == Call(
        call_id="c1",
        work_item_id="w-c1",
        tool="http.fetch",
        arguments={},
        policy=policy("required"),
    )


def test_an_approval_request_marks_only_its_own_call_pending() -> None:
    asked = calls_folded(
        called("c1"), called("c2"), *decide.request(call(call_id="c2"), "a2", NOW, 60)
    )

    first, second = asked
    assert first.approval_status is None and first.approval_id is None
    assert (second.approval_id, second.approval_status, second.approval_tier) == (
        "a2",
        "pending",
        "required",
    )
    assert second.approval_expires_at == "2025-01-01T00:01:00.000000Z"
    assert pending(asked) == [second]


def test_an_answer_to_an_approval_the_stream_never_asked_for_changes_no_call() -> None:
    asked = calls_folded(called("c1"), *decide.request(call(call_id="c1"), "a1", NOW, 60))
    stream: MemoryStream[DirectCall] = MemoryStream(evolve, stream_id=CALL, tenant_id=TENANT)
    (stray,) = stream.append(
        [ApprovalResolved(approval_id="a-unknown", decision="denied", by=None, reason=None)]
    )

    assert evolve_calls(asked, stray) == asked


def test_a_completed_call_keeps_its_receipt_and_other_events_change_no_call() -> None:
    calls = calls_folded(called("c1"), called("c2"))
    receipt = receipt_of(calls[1], "ok", {"v": 1})
    stream: MemoryStream[DirectCall] = MemoryStream(evolve, stream_id=CALL, tenant_id=TENANT)
    done, other = stream.append(
        [ToolCompleted(call_id="c2", receipt=receipt), ThreadRenamed(title="x")]
    )

    after = evolve_calls(calls, done)
    assert [c.receipt for c in after] == [None, receipt]
    assert evolve_calls(after, other) == after
