"""The approval queue (API.md §5): every device sees the same queue; one answer wins."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Response, Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    actor_of,
    caller_of,
    found,
    json_bytes,
    runtime_of,
)
from nome_api.errors import ApiError
from nome_api.schemas import PageOf, Strict
from nome_core.approvals.commands import ResolveApproval
from projections.approvals import ApprovalStatus, ApprovalView


class ResolveBody(Strict):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


@get("/", summary="The approval queue, oldest first")
async def list_approvals(
    request: Req,
    status: Annotated[ApprovalStatus | None, QueryParameter()] = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Response[PageOf[ApprovalView]]:
    approvals = runtime_of(request).queries.approvals
    page = await approvals.page(
        caller_of(request).tenant_id, status=status, limit=limit, cursor=cursor
    )
    return json_bytes(page)


@get("/{approval_id:str}", summary="An approval")
async def get_approval(request: Req, approval_id: FromPath[str]) -> Response[ApprovalView]:
    approvals = runtime_of(request).queries.approvals
    return found(await approvals.approval(caller_of(request).tenant_id, approval_id), "approval")


async def _resolve(
    request: Req,
    approval_id: str,
    decision: Literal["approved", "denied"],
    reason: str | None,
) -> Response[ApprovalView]:
    runtime, caller = runtime_of(request), caller_of(request)
    located = await runtime.queries.approvals.located(caller.tenant_id, approval_id)
    if located is None:
        raise ApiError(404, "no such approval")
    ref, approval = located
    cmd = ResolveApproval(
        approval_id=approval_id,
        stream_id=ref.stream_id,
        run_id=ref.run_id,
        thread_id=ref.thread_id,
        decision=decision,
        reason=reason,
        roles=caller.roles,
        receipt_id=runtime.app.new_id(),
        at=runtime.clock.now(),
    )
    outcome = await runtime.app.resolve_approval(actor_of(request), cmd)
    resolved = msgspec.structs.replace(
        approval,
        status=decision,
        resolved_at=outcome.events[0].at,
        resolved_by=caller.key_id,
        reason=reason,
    )
    return json_bytes(msgspec.json.encode(resolved), position=outcome.position)


@post("/{approval_id:str}/approve", status_code=200, summary="Approve", opt={"role": "member"})
async def approve(
    request: Req, approval_id: FromPath[str], data: JSONBody[ResolveBody | None] = None
) -> Response[ApprovalView]:
    return await _resolve(request, approval_id, "approved", data.reason if data else None)


@post("/{approval_id:str}/deny", status_code=200, summary="Deny", opt={"role": "member"})
async def deny(
    request: Req, approval_id: FromPath[str], data: JSONBody[ResolveBody | None] = None
) -> Response[ApprovalView]:
    return await _resolve(request, approval_id, "denied", data.reason if data else None)


router = Router(
    path="/v1/approvals",
    route_handlers=[list_approvals, get_approval, approve, deny],
    tags=["approvals"],
)
