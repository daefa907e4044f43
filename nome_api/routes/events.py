"""The tenant's workspace stream (API.md §3): every event of the tenant, live, by position."""

from __future__ import annotations

from litestar import Router, get
from litestar.response import Stream

from nome_api.context import Req, caller_of, runtime_of
from nome_api.errors import ApiError
from nome_api.openapi import RESUMABLE, SSE
from nome_api.routes.runs import SSE_HEADERS
from nome_api.schemas import is_position


@get(
    "/v1/events",
    summary="Workspace event stream (SSE)",
    tags=["events"],
    media_type=SSE,
    opt=RESUMABLE,
)
async def workspace_events(request: Req) -> Stream:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not is_position(raw):
        raise ApiError(400, "Last-Event-ID and ?after= must be a non-negative integer (a position)")
    runtime = runtime_of(request)
    frames = runtime.hub.workspace_frames(caller_of(request).tenant_id, int(raw))
    return Stream(frames, media_type="text/event-stream", headers=SSE_HEADERS)


router = Router(path="/", route_handlers=[workspace_events])
