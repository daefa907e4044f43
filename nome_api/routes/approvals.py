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
    reached,
    runtime_of,
)
from nome_api.errors import ApiError
from nome_api.openapi import errors
from nome_api.schemas import PageOf, Strict
from nome_core.approvals.commands import ResolveApproval
from projections.approvals import ApprovalStatus, ApprovalView
from projections.tools import ReceiptView, receipt_view


class Resolved(ApprovalView, kw_only=True):
    """An answered approval; for a direct call that ran on approval, also its receipt (the
    field is absent otherwise: the answer is the approval as GET shows it)."""

    receipt: ReceiptView | msgspec.UnsetType = msgspec.UNSET


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
) -> Response[Resolved]:
    runtime, caller = runtime_of(request), caller_of(request)
    approvals = runtime.queries.approvals
    located = await approvals.located(caller.tenant_id, approval_id)
    if located is None:
        # Perhaps asked for right after it was made, before the read model has it (another
        # process's projector): once the approvals have caught up with the log, look again.
        head = await runtime.log.head()
        limit = runtime.settings.min_position_wait_s
        names = [runtime.read_models.approvals.name]
        if await runtime.queries.tracking.reached(runtime.redis, head, seconds=limit, names=names):
            located = await approvals.located(caller.tenant_id, approval_id)
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
    receipt: ReceiptView | msgspec.UnsetType = msgspec.UNSET
    if ref.run_id is None and decision == "approved":
        # A direct call ran in this request: its receipt is the answer's too.
        call = await runtime.log.call(runtime.app.calls.get, caller.tenant_id, ref.stream_id)
        if call is not None and call.call.receipt is not None:
            receipt = receipt_view(call.call.receipt)
    resolved = Resolved(
        **msgspec.structs.asdict(approval),
        receipt=receipt,
    )
    resolved = msgspec.structs.replace(
        resolved,
        status=decision,
        resolved_at=outcome.events[0].at,
        resolved_by=caller.key_id,
        reason=reason,
    )
    return json_bytes(msgspec.json.encode(resolved), position=await reached(request, outcome))


@post(
    "/{approval_id:str}/approve",
    status_code=200,
    summary="Approve",
    opt={"role": "member"},
    responses=errors(409),
)
async def approve(
    request: Req, approval_id: FromPath[str], data: JSONBody[ResolveBody | None] = None
) -> Response[Resolved]:
    return await _resolve(request, approval_id, "approved", data.reason if data else None)


@post(
    "/{approval_id:str}/deny",
    status_code=200,
    summary="Deny",
    opt={"role": "member"},
    responses=errors(409),
)
async def deny(
    request: Req, approval_id: FromPath[str], data: JSONBody[ResolveBody | None] = None
) -> Response[Resolved]:
    return await _resolve(request, approval_id, "denied", data.reason if data else None)


router = Router(
    path="/v1/approvals",
    route_handlers=[list_approvals, get_approval, approve, deny],
    tags=["approvals"],
)
