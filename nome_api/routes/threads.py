"""Threads and messages (API.md §2)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, patch, post
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
from nome_api.errors import ApiError, Issue
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import Labels, PageOf, Strict, Title
from nome_core.bus import Claim, Claimed
from nome_core.events import Event
from nome_core.threads.commands import (
    AddMessage,
    ClientRole,
    CreateThread,
    DeleteThread,
    RenameThread,
)
from nome_core.threads.events import MessageAdded
from nome_core.threads.state import ThreadState, evolve
from projections.threads import RESERVED_METADATA, MessageView, ThreadView, message_view, view_of

_encode = msgspec.json.Encoder().encode


class CreateThreadBody(Strict):
    title: Title = ""
    metadata: Labels = {}


class RenameThreadBody(Strict):
    title: Title


class PostMessageBody(Strict):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    role: ClientRole = "user"
    metadata: Labels = {}


def _thread(outcome_state: ThreadState | None) -> bytes:
    assert outcome_state is not None
    return _encode(view_of(outcome_state))


@post("/", status_code=201, summary="Create a thread", opt={"role": "member", **IDEMPOTENT})
async def create_thread(request: Req, data: JSONBody[CreateThreadBody]) -> Response[ThreadView]:
    async def run(claim: Claim | None) -> Response[Any]:
        app = runtime_of(request).app
        cmd = CreateThread(thread_id=app.new_id(), title=data.title, metadata=dict(data.metadata))
        outcome = await app.threads.handle(actor_of(request), cmd, claim=claim)
        return json_bytes(_thread(outcome.state), status=201, position=outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve)
        return json_bytes(_thread(state), status=201, position=position)

    return await idempotent(request, run, replay)


@get("/", summary="List threads, most recently updated first")
async def list_threads(
    request: Req,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    q: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Response[PageOf[ThreadView]]:
    threads, tenant = runtime_of(request).queries.threads, caller_of(request).tenant_id
    if q:
        return json_bytes(await threads.search(tenant, q, limit=limit, cursor=cursor))
    return json_bytes(await threads.page(tenant, limit=limit, cursor=cursor))


@get("/{thread_id:str}", summary="Get a thread")
async def get_thread(request: Req, thread_id: FromPath[str]) -> Response[ThreadView]:
    threads = runtime_of(request).queries.threads
    return found(await threads.thread(caller_of(request).tenant_id, thread_id), "thread")


@patch("/{thread_id:str}", summary="Rename a thread", opt={"role": "member"}, responses=errors(409))
async def rename_thread(
    request: Req, thread_id: FromPath[str], data: JSONBody[RenameThreadBody]
) -> Response[ThreadView]:
    cmd = RenameThread(thread_id=checked_id(thread_id, "thread"), title=data.title)
    outcome = await runtime_of(request).app.threads.handle(actor_of(request), cmd)
    return json_bytes(_thread(outcome.state), position=await reached(request, outcome))


@delete(
    "/{thread_id:str}",
    summary="Delete a thread (a tombstone event)",
    opt={"role": "member"},
    responses=errors(409),
)
async def delete_thread(request: Req, thread_id: FromPath[str]) -> Response[None]:
    cmd = DeleteThread(thread_id=checked_id(thread_id, "thread"))
    # Its active and queued runs stop in the same commit.
    outcome = await runtime_of(request).app.runs.delete_thread(actor_of(request), cmd)
    return Response(None, status_code=204, headers={"X-Nome-Position": str(outcome.position or 0)})


@get("/{thread_id:str}/messages", summary="List a thread's messages, oldest first")
async def list_messages(
    request: Req, thread_id: FromPath[str], limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[MessageView]]:
    threads = runtime_of(request).queries.threads
    page = await threads.messages(
        caller_of(request).tenant_id, thread_id, limit=limit, cursor=cursor
    )
    return found(page, "thread")


@post(
    "/{thread_id:str}/messages",
    status_code=201,
    summary="Append a user or system message",
    opt={"role": "member", **IDEMPOTENT},
)
async def post_message(
    request: Req, thread_id: FromPath[str], data: JSONBody[PostMessageBody]
) -> Response[MessageView]:
    reserved = RESERVED_METADATA & data.metadata.keys()
    if reserved:
        raise ApiError(
            422,
            "the request is not valid",
            issues=[Issue(path=["metadata", k], message="reserved key") for k in sorted(reserved)],
        )

    async def run(claim: Claim | None) -> Response[Any]:
        app = runtime_of(request).app
        cmd = AddMessage(
            thread_id=checked_id(thread_id, "thread"),
            message_id=app.new_id(),
            role=data.role,
            content=data.content,
            attributes=dict(data.metadata),
            client=caller_of(request).meta.client,
        )
        outcome = await app.threads.handle(actor_of(request), cmd, claim=claim)
        return _message(outcome.events[-1], outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        _, event, position = await result_of(request, claimed, evolve)
        return _message(event, position)

    return await idempotent(request, run, replay)


def _message(added: Event, position: int | None) -> Response[bytes]:
    assert isinstance(added.data, MessageAdded)
    message = message_view(added, added.data)
    return json_bytes(_encode(message), status=201, position=position)


router = Router(
    path="/v1/threads",
    route_handlers=[
        create_thread,
        list_threads,
        get_thread,
        rename_thread,
        delete_thread,
        list_messages,
        post_message,
    ],
    tags=["threads"],
)
