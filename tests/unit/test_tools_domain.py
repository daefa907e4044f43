"""Tools, pure: the policy matrix's every rule and its simulation, policy changes (recorded
only when they change something, each a new version), and running one call through an
executor into its receipt."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nome_api.executors.builtin import BuiltinExecutor
from nome_core.errors import Invalid
from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from nome_core.tools.commands import SetPolicy
from nome_core.tools.decide import POLICIES, decide
from nome_core.tools.events import PolicyChanged, PolicyDecision
from nome_core.tools.executor import CallContext, Executor, ToolQueued, execute
from nome_core.tools.policy import (
    APPROVALS,
    OFFLINE,
    Approval,
    Offline,
    PastCall,
    Policy,
    decide_call,
    default_policy,
    simulate,
)
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call, evolve, policy_stream_id
from nome_core.values import ROLES
from tests.support.fakes import FakeExecutor, StepClock, fake_result
from tests.support.streams import MemoryStream

TENANT = "00000000-0000-4000-8000-0000000000a1"
OTHER_TENANT = "00000000-0000-4000-8000-0000000000a2"
RUN = "00000000-0000-4000-8000-0000000000c1"

roles = st.lists(st.sampled_from([*ROLES, "root"]), max_size=4)
policies = st.builds(
    Policy,
    tool=st.sampled_from(["clock.now", "http.fetch"]),
    max_calls_per_run=st.none() | st.integers(0, 5),
    approval=st.sampled_from(APPROVALS),
    offline=st.sampled_from(OFFLINE),
    allowed_roles=st.lists(st.sampled_from(ROLES), max_size=3),
    version=st.integers(1, 9),
)
agent_tools = st.none() | st.lists(st.sampled_from(["clock.now", "http.fetch", "math.evaluate"]))


# -- decide_call: each rule --------------------------------------------------------------


@given(so_far=st.integers(0, 20), caller_roles=roles, tools=agent_tools)
def test_a_tool_the_tenant_does_not_have_is_denied_whatever_else_holds(
    so_far: int, caller_roles: list[str], tools: list[str] | None
) -> None:
    decision = decide_call(None, calls_so_far=so_far, roles=caller_roles, agent_tools=tools)

    assert decision == PolicyDecision(decision="deny", rule="unknown_tool", version=0)


def test_a_tool_missing_from_the_agents_tools_is_denied_before_any_other_rule() -> None:
    policy = Policy(tool="clock.now", allowed_roles=[], max_calls_per_run=0, version=4)

    decision = decide_call(policy, calls_so_far=9, roles=[], agent_tools=["math.evaluate"])

    assert decision == PolicyDecision(decision="deny", rule="agent_tools", version=0)


def test_a_direct_call_names_its_tool_itself_so_no_agent_list_applies() -> None:
    decision = decide_call(Policy(tool="clock.now"), calls_so_far=0, roles=["member"])

    assert decision.rule == "policy" and decision.decision == "allow"


@pytest.mark.parametrize(
    ("caller", "allowed"),
    [([], ["member"]), (["viewer"], ["member", "admin"]), (["admin"], []), (["root"], ["member"])],
    ids=["no roles", "other role", "nobody allowed", "unknown role"],
)
def test_a_caller_without_an_allowed_role_is_denied_under_the_policys_version(
    caller: list[str], allowed: list[str]
) -> None:
    policy = Policy(tool="clock.now", allowed_roles=allowed, version=7)

    decision = decide_call(policy, calls_so_far=0, roles=caller, agent_tools=["clock.now"])

    assert decision == PolicyDecision(decision="deny", rule="allowed_roles", version=7)


def test_one_shared_role_is_enough() -> None:
    policy = Policy(tool="clock.now", allowed_roles=["operator"])

    assert decide_call(policy, calls_so_far=0, roles=["viewer", "operator"]).decision == "allow"


@pytest.mark.parametrize(
    ("limit", "so_far", "denied"),
    [(3, 2, False), (3, 3, True), (3, 4, True), (0, 0, True), (None, 10_000, False)],
    ids=["below", "at", "above", "zero allows none", "no limit"],
)
def test_calls_beyond_the_maximum_per_run_are_denied(
    limit: int | None, so_far: int, denied: bool
) -> None:
    policy = Policy(tool="clock.now", max_calls_per_run=limit, version=2)

    decision = decide_call(policy, calls_so_far=so_far, roles=["member"])

    expected = (
        PolicyDecision(decision="deny", rule="max_calls_per_run", version=2)
        if denied
        else PolicyDecision(decision="allow", rule="policy", version=2)
    )
    assert decision == expected


@pytest.mark.parametrize("tier", ["required", "admin"])
def test_a_tool_that_needs_approval_asks_for_it_at_its_tier(tier: Approval) -> None:
    policy = Policy(tool="http.fetch", approval=tier, version=5)

    decision = decide_call(policy, calls_so_far=0, roles=["member"], agent_tools=["http.fetch"])

    assert decision == PolicyDecision(
        decision="approval_required", rule=f"approval:{tier}", version=5
    )


def test_a_call_no_rule_stops_is_allowed_by_the_policy() -> None:
    decision = decide_call(Policy(tool="clock.now", version=3), calls_so_far=1, roles=["admin"])

    assert decision == PolicyDecision(decision="allow", rule="policy", version=3)


@given(policy=policies, so_far=st.integers(0, 8), caller_roles=roles, tools=agent_tools)
def test_the_first_rule_that_applies_decides_in_the_documented_order(
    policy: Policy, so_far: int, caller_roles: list[str], tools: list[str] | None
) -> None:
    decision = decide_call(policy, calls_so_far=so_far, roles=caller_roles, agent_tools=tools)

    limit = policy.max_calls_per_run
    rules = [
        ("agent_tools", tools is not None and policy.tool not in tools),
        ("allowed_roles", not set(caller_roles) & set(policy.allowed_roles)),
        ("max_calls_per_run", limit is not None and so_far >= limit),
        (f"approval:{policy.approval}", policy.approval != "none"),
        ("policy", True),
    ]
    rule = next(name for name, applies in rules if applies)
    assert decision.rule == rule
    assert decision.decision == (
        "allow" if rule == "policy" else "approval_required" if rule[:9] == "approval:" else "deny"
    )
    assert decision.version == (0 if rule == "agent_tools" else policy.version)


def test_the_default_policy_asks_approval_for_a_dangerous_tool_and_allows_the_rest() -> None:
    assert default_policy("http.fetch") == Policy(
        tool="http.fetch", approval="required", max_calls_per_run=10
    )
    for tool in sorted(set(BUILTIN_TOOLS) - {"http.fetch"}):
        assert default_policy(tool) == Policy(tool=tool)
    assert default_policy("pkg.tool") == Policy(tool="pkg.tool")
    assert default_policy("pkg.tool", dangerous=True).approval == "required"
    assert default_policy("http.fetch", dangerous=False).approval == "none"


# -- simulate ----------------------------------------------------------------------------


def past(
    call_id: str,
    decision: str,
    *,
    tool: str = "clock.now",
    run_id: str | None = RUN,
    so_far: int = 0,
    creator: tuple[str, ...] = ("member",),
) -> PastCall:
    return PastCall(
        call_id=call_id,
        run_id=run_id,
        tool=tool,
        decision=decision,
        calls_so_far=so_far,
        creator_roles=list(creator),
        at=f"2025-01-01T00:00:0{len(call_id)}.000000Z",
    )


def test_a_simulation_counts_the_run_calls_of_the_tool_the_proposal_decides_otherwise() -> None:
    calls = [
        past("c1", "allow"),
        past("c2", "allow", so_far=1),
        past("c3", "allow", so_far=2),
        past("c4", "allow", creator=("viewer",)),
        past("c5", "allow", tool="math.evaluate", so_far=5),
        past("c6", "allow", run_id=None, so_far=5),
    ]
    proposed = Policy(tool="clock.now", max_calls_per_run=2)

    result = simulate(proposed, calls)

    assert (result.tool, result.calls_considered, result.changed) == ("clock.now", 4, 2)
    assert result.changes == {"allow -> deny": 2}
    assert [(c.call_id, c.before, c.after, c.rule) for c in result.calls] == [
        ("c3", "allow", "deny", "max_calls_per_run"),
        ("c4", "allow", "deny", "allowed_roles"),
    ]
    assert result.calls[0].run_id == RUN and result.calls[0].at == calls[2].at


def test_a_simulation_shows_at_most_the_calls_asked_for_but_counts_them_all() -> None:
    calls = [past(f"c{i}", "deny") for i in range(5)]

    result = simulate(Policy(tool="clock.now"), calls, shown=2)

    assert result.changed == 5 and result.changes == {"deny -> allow": 5}
    assert [c.call_id for c in result.calls] == ["c0", "c1"]


@given(policy=policies, data=st.data())
def test_simulating_the_policy_that_decided_the_calls_changes_nothing(
    policy: Policy, data: st.DataObject
) -> None:
    facts = data.draw(st.lists(st.tuples(st.integers(0, 6), roles), max_size=6))
    calls = [
        past(
            f"c{i}",
            decide_call(policy, calls_so_far=n, roles=who).decision,
            tool=policy.tool,
            so_far=n,
            creator=tuple(who),
        )
        for i, (n, who) in enumerate(facts)
    ]

    result = simulate(policy, calls)

    assert (result.calls_considered, result.changed, result.changes) == (len(calls), 0, {})


# -- policy changes ----------------------------------------------------------------------


def set_policy(
    state: Policy | None, *, dangerous: bool = False, **fields: Any
) -> list[PolicyChanged]:
    proposed = Policy(tool=fields.pop("tool", "clock.now"), **fields)
    cmd = SetPolicy(tenant_id=TENANT, policy=proposed, dangerous=dangerous)
    return decide(cmd, state)  # type: ignore[return-value]


def policy_stream() -> MemoryStream[Policy]:
    return MemoryStream(evolve, stream_id=policy_stream_id(TENANT, "clock.now"), tenant_id=TENANT)


@pytest.mark.parametrize("tool", ["clock.now", "http.fetch"])
def test_setting_a_tools_default_policy_on_a_tool_never_changed_records_nothing(
    tool: str,
) -> None:
    # Whatever version the caller names: versions count recorded changes.
    default = msgspec.structs.replace(default_policy(tool), version=42)

    cmd = SetPolicy(tenant_id=TENANT, policy=default, dangerous=tool == "http.fetch")
    assert decide(cmd, None) == []


@given(policy=policies, data=st.data())
def test_proposing_the_current_settings_again_appends_nothing_however_the_roles_are_listed(
    policy: Policy, data: st.DataObject
) -> None:
    stream = policy_stream()
    stream.append(set_policy(None, approval="admin", allowed_roles=["viewer"]))
    stream.append(
        set_policy(
            stream.state,
            max_calls_per_run=policy.max_calls_per_run,
            approval=policy.approval,
            offline=policy.offline,
            allowed_roles=policy.allowed_roles,
        )
    )
    current = stream.live()
    # The same roles in any order, some named more than once.
    roles = data.draw(st.permutations(current.allowed_roles), label="order")
    repeated = data.draw(st.lists(st.sampled_from(roles), max_size=2) if roles else st.just([]))

    again = set_policy(
        current,
        max_calls_per_run=current.max_calls_per_run,
        approval=current.approval,
        offline=current.offline,
        allowed_roles=[*roles, *repeated],
    )

    assert again == []


def test_naming_an_allowed_role_twice_is_no_change() -> None:
    default_roles = default_policy("clock.now").allowed_roles

    assert set_policy(None, allowed_roles=[*default_roles, default_roles[0]]) == []


def test_turning_off_the_approval_of_a_dangerous_package_tool_is_recorded() -> None:
    # Until a change is recorded, a package tool's policy is its default, which asks for an
    # approval when the tool is dangerous (API.md §6a; ToolHandlers.policy).
    effective = default_policy("acme.deploy", dangerous=True)
    assert effective.approval == "required"

    changed = set_policy(
        None, tool="acme.deploy", dangerous=True, approval="none", max_calls_per_run=None
    )

    assert [c.approval for c in changed] == ["none"]


def test_a_change_records_the_new_settings_with_the_roles_sorted_once() -> None:
    changed = set_policy(
        None,
        approval="admin",
        offline="queue",
        max_calls_per_run=0,
        allowed_roles=["operator", "admin", "operator"],
    )

    assert changed == [
        PolicyChanged(
            tool="clock.now",
            max_calls_per_run=0,
            approval="admin",
            offline="queue",
            allowed_roles=["admin", "operator"],
        )
    ]


def test_each_recorded_change_is_the_next_version_and_a_change_of_nothing_is_none() -> None:
    stream = policy_stream()
    assert stream.state is None  # version 1 is the default, never recorded

    stream.append(set_policy(stream.state, approval="required"))
    stream.append(set_policy(stream.state, approval="required", version=99))
    stream.append(set_policy(stream.state, approval="required", offline="skip"))
    stream.append(
        set_policy(
            stream.state,
            approval="required",
            offline="skip",
            allowed_roles=["operator", "member", "admin"],
        )
    )

    assert len(stream.events) == 2
    assert stream.live() == Policy(
        tool="clock.now",
        approval="required",
        offline="skip",
        allowed_roles=["admin", "member", "operator"],
        version=3,
    )


@pytest.mark.parametrize(
    "allowed", [["root"], ["admin", "Admin"], [""]], ids=["unknown", "wrong case", "empty"]
)
def test_a_policy_naming_an_unknown_role_is_refused(allowed: list[str]) -> None:
    with pytest.raises(Invalid, match="unknown roles"):
        set_policy(None, allowed_roles=allowed)


def test_a_negative_maximum_of_calls_is_refused() -> None:
    with pytest.raises(Invalid, match="max_calls_per_run"):
        set_policy(None, max_calls_per_run=-1)


def test_a_change_folds_unknown_settings_to_the_safe_defaults() -> None:
    stream = policy_stream()
    stream.append(
        [
            PolicyChanged(
                tool="clock.now",
                max_calls_per_run=None,
                approval="sometimes",
                offline="maybe",
                allowed_roles=["member"],
            )
        ]
    )

    assert (stream.live().approval, stream.live().offline) == ("none", "fail")


def test_each_tenant_and_tool_has_its_own_policy_stream() -> None:
    ids = {
        policy_stream_id(tenant, tool)
        for tenant in (TENANT, OTHER_TENANT)
        for tool in ("clock.now", "http.fetch")
    }
    cmd = SetPolicy(tenant_id=TENANT, policy=Policy(tool="http.fetch"), dangerous=True)

    assert len(ids) == 4
    assert POLICIES.stream_of(cmd) == policy_stream_id(TENANT, "http.fetch")


# -- execute -----------------------------------------------------------------------------

SPEC = BUILTIN_TOOLS["math.evaluate"]
RUN_CONTEXT = CallContext(tenant_id=TENANT, run_id=RUN, thread_id="t-1")


def a_call(
    arguments: Any = None,
    *,
    policy: PolicyDecision | None = None,
    tool: str = "math.evaluate",
    approval_id: str | None = None,
) -> Call:
    return Call(
        call_id="c-1",
        work_item_id="w-1",
        tool=tool,
        arguments={"expression": "1 + 2"} if arguments is None else arguments,
        policy=policy or PolicyDecision(decision="allow", rule="policy", version=4),
        approval_id=approval_id,
    )


def run_call(
    call: Call,
    *,
    spec: ToolSpec | None = SPEC,
    offline: Offline = "fail",
    executor: Executor | None = None,
    context: CallContext = RUN_CONTEXT,
) -> ToolReceipt:
    return asyncio.run(
        execute(
            call,
            spec=spec,
            policy=Policy(tool=call.tool, offline=offline),
            context=context,
            executor=executor or FakeExecutor(),
            clock=StepClock(),
            queue_retry_s=7.5,
        )
    )


def sha256_of_canonical_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_an_allowed_call_runs_once_and_its_receipt_holds_the_result_and_its_hashes() -> None:
    executor = FakeExecutor()
    call = a_call(approval_id="a-1")

    receipt = run_call(call, executor=executor)

    assert executor.ran == [(call, RUN_CONTEXT)]
    result = fake_result("math.evaluate", "c-1", {"expression": "1 + 2"})
    assert receipt.status == "ok" and receipt.error is None
    assert receipt.result == result
    assert receipt.result_sha256 == sha256_of_canonical_json(result)
    assert receipt.arguments_sha256 == sha256_of_canonical_json({"expression": "1 + 2"})
    assert (receipt.run_id, receipt.call_id, receipt.work_item_id, receipt.tool) == (
        RUN,
        "c-1",
        "w-1",
        "math.evaluate",
    )
    assert (receipt.policy_version, receipt.approval_id) == (4, "a-1")
    # The clock gives the receipt its id and both times, in that order.
    assert receipt.id == "00000000-0000-0000-0000-000000000001"
    assert receipt.started_at < receipt.finished_at
    assert receipt.duration_ms >= 0


def test_a_denied_call_never_reaches_the_executor_and_says_which_rule_denied_it() -> None:
    executor = FakeExecutor()
    denied = PolicyDecision(decision="deny", rule="max_calls_per_run", version=2)

    receipt = run_call(a_call(policy=denied), executor=executor)

    assert executor.ran == []
    assert (receipt.status, receipt.error) == ("denied", "denied by policy (max_calls_per_run)")
    assert (receipt.result, receipt.result_sha256, receipt.policy_version) == (None, None, 2)


def test_a_call_of_a_tool_uninstalled_since_it_was_decided_is_an_error_without_running() -> None:
    executor = FakeExecutor()

    receipt = run_call(a_call(), spec=None, executor=executor)

    assert executor.ran == []
    assert receipt.status == "error"
    assert receipt.error is not None and receipt.error.startswith("tool_uninstalled")


def test_a_tool_that_fails_leaves_an_error_receipt_with_its_message() -> None:
    receipt = run_call(a_call({"fail": "the disk is full"}))

    assert (receipt.status, receipt.error) == ("error", "the disk is full")
    assert (receipt.result, receipt.result_sha256) == (None, None)


def test_arguments_that_do_not_fit_the_tool_leave_an_error_receipt() -> None:
    clock = StepClock()

    receipt = run_call(a_call({"expr": "1"}), executor=BuiltinExecutor(clock))

    assert receipt.status == "error"
    assert receipt.error is not None and "expr" in receipt.error


@pytest.mark.parametrize(("offline", "status"), [("fail", "error"), ("skip", "skipped")])
def test_an_unreachable_backend_leaves_the_receipt_its_offline_rule_says(
    offline: Offline, status: str
) -> None:
    receipt = run_call(a_call({"offline": True}), offline=offline)

    assert receipt.status == status
    assert receipt.error == "math.evaluate is unreachable"
    assert receipt.result is None


def test_an_unreachable_backend_under_offline_queue_leaves_no_receipt_but_a_retry_time() -> None:
    executor = FakeExecutor(down={"math.evaluate"})

    with pytest.raises(ToolQueued) as queued:
        run_call(a_call(), offline="queue", executor=executor)

    assert queued.value.retry_after_s == 7.5
    assert len(executor.ran) == 1


def test_a_direct_calls_receipt_belongs_to_no_run() -> None:
    context = CallContext(tenant_id=TENANT, run_id=None, thread_id=None)

    assert run_call(a_call(), context=context).run_id is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=40)
@given(arguments=st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_receipt_hashes_are_sha256_of_the_canonical_json_whatever_the_key_order(
    arguments: dict[str, Any],
) -> None:
    arguments.pop("fail", None)
    arguments.pop("offline", None)
    reordered = dict(reversed(list(arguments.items())))

    first = run_call(a_call(arguments))
    second = run_call(a_call(reordered))

    assert first.arguments_sha256 == second.arguments_sha256
    assert first.arguments_sha256 == sha256_of_canonical_json(arguments)
    assert first.result_sha256 == sha256_of_canonical_json(first.result)


def test_canonical_json_keeps_non_ascii_text_as_utf8() -> None:
    receipt = run_call(a_call({"text": "Grüße 👋"}))

    expected = hashlib.sha256('{"text":"Grüße 👋"}'.encode()).hexdigest()
    assert receipt.arguments_sha256 == expected
