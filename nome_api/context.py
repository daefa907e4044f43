"""Per-request access to the process runtime and the authenticated caller, and the shapes
of answers every route shares."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response
from litestar.params import Parameter

from nome_api.errors import ApiError
from nome_api.gateway import Caller
from nome_api.runtime import Runtime
from nome_core.bus import Actor, Outcome
from projections.paging import DEFAULT_LIMIT, MAX_LIMIT

Req = Request[Any, Any, Any]

# Every list route's paging parameters (API.md §0).
Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description="page size")]
Cursor = Annotated[str | None, Parameter(description="opaque; from next_cursor")]
DEFAULT_PAGE = DEFAULT_LIMIT


def runtime_of(request: Req) -> Runtime:
    return request.app.state["runtime"]  # type: ignore[no-any-return]


def caller_of(request: Req) -> Caller:
    return request.scope["state"]["caller"]  # type: ignore[no-any-return]


def actor_of(request: Req) -> Actor:
    caller = caller_of(request)
    return Actor(caller.tenant_id, caller.meta)


def json_bytes(body: bytes, *, status: int = 200, position: int | None = None) -> Response[bytes]:
    """A JSON response from ready bytes; commands add the log position they reached."""
    headers = {"X-Nome-Position": str(position)} if position is not None else {}
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def found(doc: bytes | None, what: str) -> Response[bytes]:
    """A read model's document as stored; 404 when there is none."""
    if doc is None:
        raise ApiError(404, f"no such {what}")
    return json_bytes(doc)


async def reached(request: Req, outcome: Outcome[Any]) -> int:
    """The position a command's answer reports: its last event's, or for a command that
    changed nothing (a rename to the same title), the log's head, which covers the state
    it answered from."""
    if outcome.position is not None:
        return outcome.position
    return await runtime_of(request).log.head()
