"""Tools, receipts and the policy matrix (API.md §5)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get, post, put
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    actor_of,
    caller_of,
    found,
    json_bytes,
    reached,
    runtime_of,
)
from nome_api.errors import ApiError
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import PageOf, Strict, ToolName
from nome_core.bus import Claim, Claimed
from nome_core.calls.commands import CallTool
from nome_core.calls.state import DirectCall
from nome_core.calls.state import evolve as call_evolve
from nome_core.tools.builtin import ToolSpec
from nome_core.tools.commands import SetPolicy
from nome_core.tools.policy import Approval, Offline, Policy, simulate
from nome_core.values import Role
from projections.tools import PolicyView, ReceiptView, policy_view, receipt_view

_encode = msgspec.json.Encoder().encode
Roles = Annotated[list[Role], msgspec.Meta(max_length=5)]


class PolicyBody(Strict):
    """A tool's policy as an admin sets it (the whole policy; omitted fields take defaults)."""

    # A bound keeps the number exact wherever it is read (Lua reads numbers as doubles).
    max_calls_per_run: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    approval: Approval = "none"
    offline: Offline = "fail"
    allowed_roles: Roles = msgspec.field(default_factory=lambda: ["member", "operator", "admin"])

    def policy(self, tool: str, version: int = 1) -> Policy:
        return Policy(
            tool=tool,
            max_calls_per_run=self.max_calls_per_run,
            approval=self.approval,
            offline=self.offline,
            allowed_roles=list(self.allowed_roles),
            version=version,
        )


class SimulatePolicyBody(PolicyBody, kw_only=True):
    tool: ToolName


class CallToolBody(Strict):
    tool: ToolName
    arguments: dict[str, object] = {}
    thread_id: str | None = None


class ToolInfo(msgspec.Struct, kw_only=True):
    name: str
    description: str
    input_schema: dict[str, Any]
    dangerous: bool
    source: str
    policy: PolicyView


class DecisionChangeView(msgspec.Struct, kw_only=True):
    call_id: str
    run_id: str | None
    at: str
    before: str
    after: str
    rule: str


class SimulationView(msgspec.Struct, kw_only=True):
    tool: str
    calls_considered: int
    changed: int
    changes: dict[str, int]
    calls: list[DecisionChangeView]


class ApprovalPending(msgspec.Struct, kw_only=True):
    approval_id: str
    call_id: str


async def _known(request: Req, tool: str) -> ToolSpec:
    spec = await runtime_of(request).queries.registry.get(caller_of(request).tenant_id, tool)
    if spec is None:
        raise ApiError(404, f"no such tool: {tool}")
    return spec


async def _policies(request: Req) -> list[tuple[ToolSpec, Policy]]:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    specs = await runtime.queries.registry.specs(tenant)
    policies = await runtime.app.tools.policies(tenant, specs)
    return list(zip(specs, policies, strict=True))


@get("/", summary="Tools with their effective policy")
async def list_tools(request: Req) -> list[ToolInfo]:
    return [
        ToolInfo(
            name=spec.name,
            description=spec.description,
            input_schema=spec.input_schema,
            dangerous=spec.dangerous,
            source=spec.source,
            policy=policy_view(policy),
        )
        for spec, policy in await _policies(request)
    ]


@get("/policies", summary="The policy matrix")
async def list_policies(request: Req) -> list[PolicyView]:
    return [policy_view(policy) for _, policy in await _policies(request)]


@put(
    "/policies/{tool:str}",
    summary="Change a tool's policy (a new version)",
    opt={"role": "admin"},
    responses=errors(409),
)
async def put_policy(
    request: Req, tool: FromPath[str], data: JSONBody[PolicyBody]
) -> Response[PolicyView]:
    spec = await _known(request, tool)
    runtime, caller = runtime_of(request), caller_of(request)
    cmd = SetPolicy(
        tenant_id=caller.tenant_id, policy=data.policy(spec.name), dangerous=spec.dangerous
    )
    outcome = await runtime.app.tools.handle(actor_of(request), cmd)
    # A change that changes nothing leaves the policy as it was (the default, maybe).
    policy = outcome.state or await runtime.log.call(
        runtime.app.tools.policy, caller.tenant_id, spec
    )
    return json_bytes(_encode(policy_view(policy)), position=await reached(request, outcome))


@post(
    "/policies/simulate",
    status_code=200,
    summary="What a proposed policy would change",
    opt={"role": "admin"},
    responses=errors(404),
)
async def simulate_policy(request: Req, data: JSONBody[SimulatePolicyBody]) -> SimulationView:
    """Replays the tenant's recent calls of the tool through the proposed policy."""
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    spec = await _known(request, data.tool)
    current = await runtime.log.call(runtime.app.tools.policy, tenant, spec)
    past = await runtime.queries.tools.recent_calls(tenant)
    outcome = simulate(data.policy(spec.name, current.version + 1), past)
    return msgspec.convert(msgspec.to_builtins(outcome), SimulationView)


@post(
    "/call",
    status_code=200,
    summary="Call a tool directly (policy applies)",
    opt={"role": "member", **IDEMPOTENT},
    responses={
        202: ResponseSpec(
            ApprovalPending, description="the call waits on an approval", generate_examples=False
        ),
        **errors(404, 409),
    },
)
async def call_tool(request: Req, data: JSONBody[CallToolBody]) -> Response[ReceiptView]:
    runtime, caller = runtime_of(request), caller_of(request)

    async def run(claim: Claim | None) -> Response[Any]:
        app = runtime.app
        cmd = CallTool(
            call_id=app.new_id(),
            work_item_id=app.new_id(),
            tool=data.tool,
            arguments=dict(data.arguments),
            thread_id=checked_id(data.thread_id, "thread") if data.thread_id else None,
            roles=caller.roles,
        )
        outcome = await app.calls.call(actor_of(request), cmd, claim=claim)
        assert outcome.state is not None
        return _called(outcome.state, outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        # The call as it stands now: its receipt, or still its approval.
        _, _, position = await result_of(request, claimed, call_evolve)
        state = await runtime.log.call(runtime.app.calls.get, caller.tenant_id, claimed.stream_id)
        assert state is not None
        return _called(state, position)

    return await idempotent(request, run, replay)


def _called(state: DirectCall, position: int | None) -> Response[bytes]:
    call = state.call
    if call.receipt is None and call.approval_id is None:
        # Started and running (or its process died: the worker settles it within a minute).
        raise ApiError(409, "the call is still running: ask again for its receipt")
    if call.receipt is None:
        pending = ApprovalPending(approval_id=call.approval_id or "", call_id=call.call_id)
        return json_bytes(_encode(pending), status=202, position=position)
    return json_bytes(_encode(receipt_view(call.receipt)), position=position)


@get("/receipts/{receipt_id:str}", summary="A tool receipt", tags=["receipts"])
async def get_receipt(request: Req, receipt_id: FromPath[str]) -> Response[ReceiptView]:
    tools = runtime_of(request).queries.tools
    return found(await tools.receipt(caller_of(request).tenant_id, receipt_id), "receipt")


@get(
    "/runs/{run_id:str}/receipts", summary="A run's tool receipts, in call order", tags=["receipts"]
)
async def run_receipts(
    request: Req, run_id: FromPath[str], limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[ReceiptView]]:
    queries, tenant = runtime_of(request).queries, caller_of(request).tenant_id
    if not await queries.runs.exists(tenant, run_id):
        raise ApiError(404, "no such run")
    return json_bytes(await queries.tools.receipts_of(tenant, run_id, limit=limit, cursor=cursor))


router = Router(
    path="/",
    route_handlers=[
        Router(
            path="/v1/tools",
            route_handlers=[list_tools, list_policies, put_policy, simulate_policy, call_tool],
            tags=["tools"],
        ),
        Router(path="/v1", route_handlers=[get_receipt, run_receipts]),
    ],
)
