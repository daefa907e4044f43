"""Threads and messages (API.md §2)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import Req, actor_of, caller_of, json_bytes, reached, runtime_of, stored_doc
from nome_api.errors import ApiError, Issue
from nome_api.idempotency import idempotent
from nome_api.ids import checked_id
from nome_api.pagination import (
    DEFAULT_LIMIT,
    MEMBER_CURSOR,
    check_limit,
    decode_cursor,
    encode_cursor,
    index_page,
    member_id,
    page_json,
)
from nome_api.schemas import CreateThread, PageOf, PostMessage, RenameThread
from nome_core.threads.state import ThreadState
from projections.threads import RESERVED_METADATA, MessageView, ThreadView, message_view

# A message-list cursor holds the last message's sequence number.
_MESSAGE_CURSOR = re.compile(r"\d{1,18}")
_encode = msgspec.json.Encoder().encode
Limit = Annotated[int, QueryParameter()]
Cursor = Annotated[str | None, QueryParameter()]


def thread_json(state: ThreadState | None) -> bytes:
    assert state is not None
    return _encode(
        ThreadView(
            id=state.id,
            title=state.title,
            metadata=state.metadata,
            created_at=state.created_at,
            updated_at=state.updated_at,
            message_count=state.message_count,
            last_run_id=state.last_run_id,
            active_run_id=state.active_run_id,
        )
    )


@post("/", status_code=201, summary="Create a thread", opt={"role": "member"})
async def create_thread(request: Req, data: JSONBody[CreateThread]) -> Response[ThreadView]:
    async def run() -> Response[Any]:
        outcome = await runtime_of(request).app.create_thread(
            actor_of(request), data.title, dict(data.metadata)
        )
        return json_bytes(thread_json(outcome.state), status=201, position=outcome.position)

    return await idempotent(request, run)


@get("/", summary="List threads, most recently updated first")
async def list_threads(
    request: Req,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    q: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Response[PageOf[ThreadView]]:
    check_limit(limit)
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    views = runtime.read_models.threads
    index = views.index(tenant)
    after = decode_cursor(cursor, MEMBER_CURSOR)
    start = f"({after}" if after else "-"
    redis = runtime.redis
    if not q:
        return json_bytes(
            await index_page(
                redis,
                index,
                limit=limit,
                cursor=cursor,
                doc_key=lambda thread_id: views.doc(tenant, thread_id),
            )
        )
    return json_bytes(await _search(request, index, start, limit, q.casefold()))


async def _search(request: Req, index: str, start: str, limit: int, needle: str) -> bytes:
    """Title search: walks the index in order; the count covers every match."""
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    views, redis = runtime.read_models.threads, runtime.redis
    found: list[bytes] = []
    last_member: str | None = None
    more = False
    total = 0
    position = "-"
    while True:
        members = await redis.zrangebylex(index, position, "+", start=0, num=500)
        if not members:
            break
        docs = await redis.mget([views.doc(tenant, member_id(m)) for m in members])
        for member, doc in zip(members, docs, strict=True):
            if doc is None:
                continue
            title = msgspec.json.decode(doc, type=_TitleOnly).title
            if needle not in title.casefold():
                continue
            total += 1
            if start != "-" and member.decode() <= start[1:]:
                continue
            if len(found) < limit:
                found.append(doc)
                last_member = member.decode()
            else:
                more = True
        position = f"({members[-1].decode()}"
    return page_json(found, encode_cursor(last_member) if more and last_member else None, total)


class _TitleOnly(msgspec.Struct):
    title: str


@get("/{thread_id:str}", summary="Get a thread")
async def get_thread(request: Req, thread_id: FromPath[str]) -> Response[ThreadView]:
    views = runtime_of(request).read_models.threads
    return await stored_doc(request, lambda tenant: views.doc(tenant, thread_id), "thread")


@patch("/{thread_id:str}", summary="Rename a thread", opt={"role": "member"})
async def rename_thread(
    request: Req, thread_id: FromPath[str], data: JSONBody[RenameThread]
) -> Response[ThreadView]:
    outcome = await runtime_of(request).app.rename_thread(
        actor_of(request), checked_id(thread_id, "thread"), data.title
    )
    return json_bytes(thread_json(outcome.state), position=await reached(request, outcome))


@delete("/{thread_id:str}", summary="Delete a thread (a tombstone event)", opt={"role": "member"})
async def delete_thread(request: Req, thread_id: FromPath[str]) -> Response[None]:
    outcome = await runtime_of(request).app.delete_thread(
        actor_of(request), checked_id(thread_id, "thread")
    )
    return Response(None, status_code=204, headers={"X-Nome-Position": str(outcome.position or 0)})


@get("/{thread_id:str}/messages", summary="List a thread's messages, oldest first")
async def list_messages(
    request: Req, thread_id: FromPath[str], limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response[PageOf[MessageView]]:
    check_limit(limit)
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    views, redis = runtime.read_models.threads, runtime.redis
    if not await redis.exists(views.doc(tenant, thread_id)):
        raise ApiError(404, "no such thread")
    after = decode_cursor(cursor, _MESSAGE_CURSOR)
    order = views.message_order(tenant, thread_id)
    low = f"({after}" if after else "-inf"
    pipe = redis.pipeline(transaction=False)
    pipe.zrangebyscore(order, low, "+inf", start=0, num=limit + 1, withscores=True)
    pipe.zcard(order)
    members, total = await pipe.execute()
    page = members[:limit]
    docs = (
        await redis.hmget(views.messages(tenant, thread_id), [m for m, _ in page]) if page else []
    )
    more = len(members) > limit
    next_cursor = encode_cursor(str(int(page[-1][1]))) if more and page else None
    return json_bytes(page_json([d for d in docs if d is not None], next_cursor, total))


@post(
    "/{thread_id:str}/messages",
    status_code=201,
    summary="Append a user or system message",
    opt={"role": "member"},
)
async def post_message(
    request: Req, thread_id: FromPath[str], data: JSONBody[PostMessage]
) -> Response[MessageView]:
    reserved = RESERVED_METADATA & data.metadata.keys()
    if reserved:
        raise ApiError(
            422,
            "the request is not valid",
            issues=[Issue(path=["metadata", k], message="reserved key") for k in sorted(reserved)],
        )

    async def run() -> Response[Any]:
        caller = caller_of(request)
        outcome = await runtime_of(request).app.add_message(
            actor_of(request),
            checked_id(thread_id, "thread"),
            role=data.role,
            content=data.content,
            client=caller.meta.client,
            attributes=dict(data.metadata),
        )
        event = outcome.events[-1]
        message = message_view(event, event.data)  # type: ignore[arg-type]
        return json_bytes(_encode(message), status=201, position=outcome.position)

    return await idempotent(request, run)


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
