"""Tools, receipts and the policy matrix (API.md §5)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import Req, actor_of, caller_of, json_bytes, reached, runtime_of, stored_doc
from nome_api.errors import ApiError, issues_from_msgspec
from nome_api.idempotency import idempotent
from nome_api.ids import checked_id
from nome_api.pagination import DEFAULT_LIMIT, check_limit, decode_cursor, encode_cursor, page_json
from nome_api.schemas import CallTool, PageOf, PolicyBody, SimulatePolicy
from nome_api.worker.direct import decide_direct, start_direct_call
from nome_core.tools import policy as policies
from nome_core.tools.builtin import ArgumentsInvalid, ToolSpec, check_arguments
from nome_core.tools.policy import Policy
from nome_core.tools.receipts import ToolReceipt
from projections.tools import RecentCall

_encode = msgspec.json.Encoder().encode


class ToolInfo(msgspec.Struct, kw_only=True):
    name: str
    description: str
    input_schema: dict[str, Any]
    dangerous: bool
    source: str
    policy: Policy


def _known(request: Req, tool: str) -> ToolSpec:
    spec = runtime_of(request).registry.get(caller_of(request).tenant_id, tool)
    if spec is None:
        raise ApiError(404, f"no such tool: {tool}")
    return spec


async def _policies(request: Req) -> dict[str, Policy]:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    names = runtime.registry.names(tenant)
    found = await asyncio.gather(
        *(asyncio.to_thread(runtime.app.policy, tenant, name) for name in names)
    )
    return dict(zip(names, found, strict=True))


@get("/", summary="Tools with their effective policy")
async def list_tools(request: Req) -> list[ToolInfo]:
    effective = await _policies(request)
    specs = runtime_of(request).registry.specs(caller_of(request).tenant_id)
    return [
        ToolInfo(
            name=spec.name,
            description=spec.description,
            input_schema=spec.input_schema(),
            dangerous=spec.dangerous,
            source=spec.source,
            policy=effective[spec.name],
        )
        for spec in specs
    ]


@get("/policies", summary="The policy matrix")
async def list_policies(request: Req) -> list[Policy]:
    return list((await _policies(request)).values())


@put(
    "/policies/{tool:str}", summary="Change a tool's policy (a new version)", opt={"role": "admin"}
)
async def put_policy(
    request: Req, tool: FromPath[str], data: JSONBody[PolicyBody]
) -> Response[Policy]:
    proposed = Policy(tool=_known(request, tool).name, **msgspec.structs.asdict(data))
    outcome = await runtime_of(request).app.set_policy(actor_of(request), proposed)
    return json_bytes(_encode(outcome.state), position=await reached(request, outcome))


class DecisionChange(msgspec.Struct, kw_only=True):
    call_id: str
    run_id: str | None
    at: str
    before: str
    after: str
    rule: str


class Simulation(msgspec.Struct, kw_only=True):
    tool: str
    calls_considered: int
    changed: int
    changes: dict[str, int]
    calls: list[DecisionChange]


@post(
    "/policies/simulate",
    status_code=200,
    summary="What a proposed policy would change",
    opt={"role": "admin"},
)
async def simulate_policy(request: Req, data: JSONBody[SimulatePolicy]) -> Simulation:
    """Replays the tenant's recent calls of the tool through the proposed policy."""
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    tool = _known(request, data.tool).name
    current = await asyncio.to_thread(runtime.app.policy, tenant, tool)
    fields = msgspec.structs.asdict(data)
    fields.pop("tool")
    proposed = Policy(tool=tool, version=current.version + 1, **fields)
    raw = await runtime.redis.lrange(runtime.read_models.tools.recent_calls(tenant), 0, -1)
    recent = [msgspec.json.decode(r, type=RecentCall) for r in raw]
    # Runs record who started them, so their calls can be decided again; direct calls are
    # decided on the caller's key at the time and are left out.
    mine = [c for c in recent if c.tool == tool and c.run_id is not None]
    changes: list[DecisionChange] = []
    summary: dict[str, int] = {}
    for call in mine:
        after = policies.decide(
            proposed, calls_so_far=call.calls_so_far, creator_roles=call.creator_roles
        )
        if after.decision != call.decision:
            key = f"{call.decision} -> {after.decision}"
            summary[key] = summary.get(key, 0) + 1
            changes.append(
                DecisionChange(
                    call_id=call.call_id,
                    run_id=call.run_id,
                    at=call.at,
                    before=call.decision,
                    after=after.decision,
                    rule=after.rule,
                )
            )
    return Simulation(
        tool=tool,
        calls_considered=len(mine),
        changed=len(changes),
        changes=summary,
        calls=changes[:200],
    )


class ApprovalPending(msgspec.Struct, kw_only=True):
    approval_id: str
    call_id: str


@post(
    "/call",
    status_code=200,
    summary="Call a tool directly (policy applies)",
    opt={"role": "member"},
)
async def call_tool(request: Req, data: JSONBody[CallTool]) -> Response[ToolReceipt]:
    runtime, caller = runtime_of(request), caller_of(request)
    spec = _known(request, data.tool)
    try:
        check_arguments(spec, data.arguments)
    except ArgumentsInvalid as exc:
        issues = issues_from_msgspec(str(exc))
        for issue in issues:
            issue.path = ["arguments", *issue.path]
        raise ApiError(422, "the arguments do not fit the tool", issues=issues) from None
    thread_id = checked_id(data.thread_id, "thread") if data.thread_id else None
    if data.tool == "thread.note" and thread_id is None:
        raise ApiError(422, "thread.note needs a thread_id", code="validation_failed")
    if thread_id is not None:
        thread = await asyncio.to_thread(runtime.app.thread, thread_id)
        if thread is None or thread.deleted or thread.tenant_id != caller.tenant_id:
            raise ApiError(404, "no such thread")

    async def run() -> Response[Any]:
        decision = await decide_direct(
            runtime.tools, caller.tenant_id, data.tool, sorted(caller.roles)
        )
        state, position = await start_direct_call(
            runtime.app,
            runtime.tools,
            actor_of(request),
            tool=data.tool,
            arguments=dict(data.arguments),
            thread_id=thread_id,
            decision=decision,
            approval_ttl_s=runtime.settings.approval_ttl_s,
        )
        call = state.call
        if call.receipt is None:
            pending = ApprovalPending(approval_id=call.approval_id or "", call_id=call.call_id)
            return json_bytes(_encode(pending), status=202, position=position)
        return json_bytes(_encode(call.receipt), position=position)

    return await idempotent(request, run)


@get("/receipts/{receipt_id:str}", summary="A tool receipt", tags=["receipts"])
async def get_receipt(request: Req, receipt_id: FromPath[str]) -> Response[ToolReceipt]:
    views = runtime_of(request).read_models.tools
    return await stored_doc(request, lambda tenant: views.receipt(tenant, receipt_id), "receipt")


@get(
    "/runs/{run_id:str}/receipts", summary="A run's tool receipts, in call order", tags=["receipts"]
)
async def run_receipts(
    request: Req,
    run_id: FromPath[str],
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[ToolReceipt]]:
    check_limit(limit)
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    if not await runtime.redis.exists(runtime.read_models.runs.doc(tenant, run_id)):
        raise ApiError(404, "no such run")
    views = runtime.read_models.tools
    after = decode_cursor(cursor)
    if after is not None and not after.isdigit():
        raise ApiError(400, "invalid cursor")
    order = views.receipts_of(tenant, run_id)
    members = await runtime.redis.zrangebyscore(
        order, f"({after}" if after else "-inf", "+inf", start=0, num=limit + 1, withscores=True
    )
    page = members[:limit]
    docs = (
        await runtime.redis.mget([views.receipt(tenant, m.decode()) for m, _ in page])
        if page
        else []
    )
    total = await runtime.redis.zcard(order)
    next_cursor = encode_cursor(str(int(page[-1][1]))) if len(members) > limit and page else None
    return json_bytes(page_json([d for d in docs if d is not None], next_cursor, total))


router = Router(
    path="/v1/tools",
    route_handlers=[list_tools, list_policies, put_policy, simulate_policy, call_tool],
    tags=["tools"],
)
receipts = Router(path="/v1", route_handlers=[get_receipt, run_receipts])
