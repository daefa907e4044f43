"""Per-request access to the process runtime and the authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litestar import Request, Response

from nome_api.errors import ApiError
from nome_api.gateway import Caller
from nome_api.runtime import Runtime
from nome_core.application import Actor, Outcome

Req = Request[Any, Any, Any]


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


async def stored_doc(request: Req, doc_key: Callable[[str], str], what: str) -> Response[bytes]:
    """A read model's document of the caller's tenant, as stored; 404 when there is none."""
    doc = await runtime_of(request).docs.get(doc_key(caller_of(request).tenant_id))
    if doc is None:
        raise ApiError(404, f"no such {what}")
    return json_bytes(doc)


async def reached(request: Req, outcome: Outcome[Any]) -> int:
    """The position a command's answer reports: its last event's, or for a command that
    changed nothing (a rename to the same title), the log's head, which covers the state
    it answered from."""
    if outcome.position is not None:
        return outcome.position
    return await asyncio.to_thread(runtime_of(request).store.head)
