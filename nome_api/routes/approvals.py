"""The approval queue (API.md §5): every device sees the same queue; one answer wins."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import Req, actor_of, caller_of, json_bytes, runtime_of, stored_doc
from nome_api.errors import ApiError
from nome_api.pagination import DEFAULT_LIMIT, index_page
from nome_api.schemas import PageOf, Resolve
from nome_api.worker.direct import finish_direct_call
from projections.approvals import ApprovalView

STATUSES = ("pending", "approved", "denied", "expired")


@get("/", summary="The approval queue, oldest first")
async def list_approvals(
    request: Req,
    status: Annotated[str | None, QueryParameter()] = None,
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[ApprovalView]]:
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(STATUSES)}")
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    approvals = runtime.read_models.approvals
    return json_bytes(
        await index_page(
            runtime.redis,
            approvals.index(tenant, status),
            limit=limit,
            cursor=cursor,
            doc_key=lambda approval_id: approvals.doc(tenant, approval_id),
        )
    )


@get("/{approval_id:str}", summary="An approval")
async def get_approval(request: Req, approval_id: FromPath[str]) -> Response[ApprovalView]:
    views = runtime_of(request).read_models.approvals
    return await stored_doc(request, lambda tenant: views.doc(tenant, approval_id), "approval")


async def _resolve(
    request: Req, approval_id: str, decision: str, reason: str | None
) -> Response[ApprovalView]:
    runtime, caller = runtime_of(request), caller_of(request)
    views = runtime.read_models.approvals
    ref_raw, doc_raw = await runtime.redis.mget(
        [views.ref(caller.tenant_id, approval_id), views.doc(caller.tenant_id, approval_id)]
    )
    if ref_raw is None or doc_raw is None:
        raise ApiError(404, "no such approval")
    ref = views.decode_ref(ref_raw)
    outcome = await runtime.app.resolve_approval(
        actor_of(request),
        stream_id=ref.stream_id,
        run_id=ref.run_id,
        thread_id=ref.thread_id,
        approval_id=approval_id,
        decision=decision,
        reason=reason,
        roles=caller.roles,
    )
    if decision == "approved" and ref.run_id is None:
        # A direct call has no worker driving it: the approver's request runs it.
        await finish_direct_call(runtime.app, runtime.tools, actor_of(request), ref.stream_id)
    resolved = msgspec.structs.replace(
        msgspec.json.decode(doc_raw, type=ApprovalView),
        status=decision,
        resolved_at=outcome.events[0].at,
        resolved_by=caller.key_id,
        reason=reason,
    )
    return json_bytes(msgspec.json.encode(resolved), position=outcome.position)


@post("/{approval_id:str}/approve", status_code=200, summary="Approve", opt={"role": "member"})
async def approve(
    request: Req, approval_id: FromPath[str], data: JSONBody[Resolve | None] = None
) -> Response[ApprovalView]:
    return await _resolve(request, approval_id, "approved", data.reason if data else None)


@post("/{approval_id:str}/deny", status_code=200, summary="Deny", opt={"role": "member"})
async def deny(
    request: Req, approval_id: FromPath[str], data: JSONBody[Resolve | None] = None
) -> Response[ApprovalView]:
    return await _resolve(request, approval_id, "denied", data.reason if data else None)


router = Router(
    path="/v1/approvals",
    route_handlers=[list_approvals, get_approval, approve, deny],
    tags=["approvals"],
)
