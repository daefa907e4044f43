"""Runs, chat, streaming and replay (API.md §3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream

from nome_api.context import Req, actor_of, caller_of, json_bytes, reached, runtime_of, stored_doc
from nome_api.errors import ApiError
from nome_api.idempotency import idempotent
from nome_api.ids import checked_id
from nome_api.pagination import (
    DEFAULT_LIMIT,
    check_limit,
    decode_cursor,
    encode_cursor,
    index_page,
    page_json,
)
from nome_api.schemas import CancelRun, Chat, CreateRun, PageOf
from nome_api.streams import TERMINAL_TYPES, frame, frame_type
from nome_core.eventstore import Row, row_envelope, tenant_of, to_event
from nome_core.runs.state import RunState, evolve
from nome_core.runs.verify import Verdict, verify
from nome_core.tenants.plans import plan_of
from projections.runs import RunView
from projections.tenants import TenantView
from projections.threads import MessageView

_encode = msgspec.json.Encoder().encode
CHAT_STOPS = TERMINAL_TYPES | {"approval.requested"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STATUSES = ("pending", "active", "completed", "failed", "cancelled")


def run_view(state: RunState) -> RunView:
    return RunView(
        id=state.id,
        thread_id=state.thread_id,
        agent_id=state.agent_id,
        status=state.status,
        awaiting_approval=state.awaiting_approval,
        tier=state.tier,
        created_at=state.created_at,
        started_at=state.started_at,
        ended_at=state.ended_at,
        event_count=state.event_count,
        usage=state.usage,
        error=state.error,
    )


async def _check_credits(request: Req) -> None:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    raw, consumed = await asyncio.gather(
        runtime.redis.get(runtime.read_models.tenants.doc(tenant)),
        runtime.redis.hget(runtime.read_models.runs.credits(tenant), "consumed"),
    )
    plan = plan_of(msgspec.json.decode(raw, type=TenantView).plan if raw else "free")
    if plan.starting_credits - int(consumed or 0) <= 0:
        raise ApiError(402, "the tenant has no credits left", code="insufficient_credits")


async def _start_run(request: Req, data: CreateRun | Chat, thread_id: str) -> RunState:
    runtime, caller = runtime_of(request), caller_of(request)
    await _check_credits(request)
    actor = actor_of(request)
    agent = await runtime.app.agent_for_run(
        actor,
        checked_id(data.agent_id, "agent") if data.agent_id else None,
        runtime.settings.model_provider,
    )
    outcome, admitted = await runtime.app.create_run(
        actor,
        thread_id=checked_id(thread_id, "thread"),
        input_text=data.input,
        agent=agent,
        tier=data.tier,
        domain_hints=list(data.domain_hints),
        enqueue=data.if_busy == "enqueue",
        creator_roles=sorted(caller.roles),
    )
    assert outcome.state is not None and outcome.position is not None
    request.scope["state"]["position"] = outcome.position
    if admitted and "worker" in runtime.roles:
        runtime.worker.offer(caller.tenant_id, outcome.state.id)
    return outcome.state


@post("/v1/runs", status_code=201, summary="Start a run", opt={"role": "member"})
async def create_run(request: Req, data: JSONBody[CreateRun]) -> Response[RunView]:
    async def run() -> Response[Any]:
        state = await _start_run(request, data, data.thread_id)
        return json_bytes(
            _encode(run_view(state)), status=201, position=request.scope["state"]["position"]
        )

    return await idempotent(request, run)


@get("/v1/runs", summary="List runs, newest first")
async def list_runs(
    request: Req,
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
    thread_id: Annotated[str | None, QueryParameter()] = None,
    status: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[RunView]]:
    check_limit(limit)
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    runs = runtime.read_models.runs
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(STATUSES)}")
    index = (
        runs.by_thread(tenant, thread_id)
        if thread_id
        else runs.by_status(tenant, status)
        if status
        else runs.index(tenant)
    )
    after = decode_cursor(cursor)
    if thread_id and status:
        # Both filters: there is no index of a thread's runs by status, so filter the thread's
        # runs (few) before paging; pages stay full and total_count counts only matches.
        every = await runtime.redis.zrangebylex(index, "-", "+")
        every_docs = (
            await runtime.redis.mget(
                [runs.doc(tenant, m.decode().rsplit("|", 1)[1]) for m in every]
            )
            if every
            else []
        )
        matching = [
            (m, d)
            for m, d in zip(every, every_docs, strict=True)
            if d is not None and _status_of(d) == status
        ]
        rest = [(m, d) for m, d in matching if after is None or m.decode() > after]
        chosen = rest[:limit]
        next_cursor = encode_cursor(chosen[-1][0].decode()) if len(rest) > limit else None
        return json_bytes(page_json([d for _, d in chosen], next_cursor, len(matching)))
    return json_bytes(
        await index_page(
            runtime.redis,
            index,
            limit=limit,
            cursor=cursor,
            doc_key=lambda run_id: runs.doc(tenant, run_id),
        )
    )


class _StatusOnly(msgspec.Struct):
    status: str


def _status_of(doc: bytes) -> str:
    return msgspec.json.decode(doc, type=_StatusOnly).status


@get("/v1/runs/{run_id:str}", summary="Get a run")
async def get_run(request: Req, run_id: FromPath[str]) -> Response[RunView]:
    views = runtime_of(request).read_models.runs
    return await stored_doc(request, lambda tenant: views.doc(tenant, run_id), "run")


@post(
    "/v1/runs/{run_id:str}/cancel",
    status_code=200,
    summary="Cancel a run",
    opt={"role": "operator"},
)
async def cancel_run(
    request: Req, run_id: FromPath[str], data: JSONBody[CancelRun | None] = None
) -> Response[RunView]:
    caller = caller_of(request)
    outcome = await runtime_of(request).app.cancel_run(
        actor_of(request),
        checked_id(run_id, "run"),
        by=caller.key_id,
        reason=data.reason if data else None,
    )
    assert outcome.state is not None
    return json_bytes(_encode(run_view(outcome.state)), position=await reached(request, outcome))


async def _own_run_rows(request: Req, run_id: str, after: int = 0) -> list[Row]:
    """The run's rows from the log, if the run is the caller's tenant's."""
    runtime = runtime_of(request)
    checked_id(run_id, "run")
    rows = await asyncio.to_thread(runtime.store.stream_rows, run_id, after=0)
    if not rows or tenant_of(rows[0].state) != caller_of(request).tenant_id:
        raise ApiError(404, "no such run")
    if rows[0].type != "run.created":
        raise ApiError(404, "no such run")
    return rows[after:]


def _resume_point(request: Req) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return 0
    if not raw.isdigit():
        raise ApiError(400, "Last-Event-ID and ?after= must be a non-negative integer (a seq)")
    return int(raw)


@get("/v1/runs/{run_id:str}/stream", summary="Stream a run's events live (SSE)")
async def stream_run(request: Req, run_id: FromPath[str]) -> Stream:
    after = _resume_point(request)
    await _own_run_rows(request, run_id)
    hub = runtime_of(request).hub
    return Stream(
        hub.run_stream(run_id, after), media_type="text/event-stream", headers=SSE_HEADERS
    )


@get("/v1/runs/{run_id:str}/events", summary="A run's events, paginated by seq")
async def run_events(
    request: Req,
    run_id: FromPath[str],
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[dict[str, Any]]]:
    check_limit(limit)
    start = after
    position = decode_cursor(cursor)
    if position is not None:
        if not position.isdigit():
            raise ApiError(400, "invalid cursor")
        start = int(position)
    rows = await _own_run_rows(request, run_id)
    page = rows[start : start + limit]
    docs = [row_envelope(r) for r in page]
    more = start + limit < len(rows)
    next_cursor = encode_cursor(str(start + len(page))) if more else None
    return json_bytes(page_json(docs, next_cursor, len(rows)))


@get("/v1/runs/{run_id:str}/replay", summary="Replay a recorded run (SSE or NDJSON)")
async def replay_run(
    request: Req,
    run_id: FromPath[str],
    format: Annotated[str | None, QueryParameter()] = None,
) -> Stream:
    rows = await _own_run_rows(request, run_id)
    ndjson = format == "ndjson" or (
        format is None and "application/x-ndjson" in request.headers.get("accept", "")
    )
    if format not in (None, "ndjson", "sse"):
        raise ApiError(400, "format must be sse or ndjson")

    async def lines() -> AsyncIterator[bytes]:
        # Frames go out in chunks of ~64 KiB: one HTTP chunk per event costs more than the
        # event itself on a long run.
        chunk: list[bytes] = []
        size = 0
        for row in rows:
            piece = row_envelope(row) + b"\n" if ndjson else frame(row)
            chunk.append(piece)
            size += len(piece)
            if size >= 65536:
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)

    media = "application/x-ndjson" if ndjson else "text/event-stream"
    return Stream(lines(), media_type=media, headers=SSE_HEADERS)


class RunAt(msgspec.Struct, kw_only=True):
    """The run as it stood after one event, folded from the log."""

    seq: int
    run: RunView
    input: str
    output: str | None
    messages: list[dict[str, Any]]
    calls: list[dict[str, Any]]


@get("/v1/runs/{run_id:str}/state", summary="The run as it stood after event `at`")
async def run_state_at(
    request: Req, run_id: FromPath[str], at: Annotated[int | None, QueryParameter(ge=1)] = None
) -> RunAt:
    rows = await _own_run_rows(request, run_id)
    upto = len(rows) if at is None else at
    if upto > len(rows):
        raise ApiError(404, f"the run has only {len(rows)} events")
    state: RunState | None = None
    for row in rows[:upto]:
        state = evolve(state, to_event(row.state, row.position))
    assert state is not None
    return RunAt(
        seq=upto,
        run=run_view(state),
        input=state.input,
        output=state.output,
        messages=[msgspec.to_builtins(m) for m in state.messages],
        calls=[msgspec.to_builtins(c) for c in state.calls],
    )


@post(
    "/v1/runs/{run_id:str}/verify",
    status_code=200,
    summary="Re-execute the harness against the recorded outputs",
    opt={"role": "operator"},
)
async def verify_run(request: Req, run_id: FromPath[str]) -> Verdict:
    rows = await _own_run_rows(request, run_id)
    return await verify([to_event(r.state, r.position) for r in rows])


# -- chat -------------------------------------------------------------------------------


class ChatResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    run: RunView
    message: MessageView | None = None


async def _chat_run(request: Req, data: Chat) -> RunState:
    runtime = runtime_of(request)
    thread_id = data.thread_id
    if thread_id is None:
        created = await runtime.app.create_thread(actor_of(request), data.input[:80], {})
        assert created.state is not None
        thread_id = created.state.id
    return await _start_run(request, data, thread_id)


@post("/v1/chat", status_code=200, summary="Run and wait for the answer", opt={"role": "member"})
async def chat(request: Req, data: JSONBody[Chat]) -> Response[ChatResult]:
    async def run() -> Response[Any]:
        runtime = runtime_of(request)
        state = await _chat_run(request, data)
        # Follow the run's frames until it ends or waits on a person; fold it once then.
        async for sse in runtime.hub.run_frames(state.id, 0):
            if frame_type(sse) in CHAT_STOPS:
                break
        state = await asyncio.to_thread(runtime.app.run, state.id) or state
        # The answer was appended by the worker, after the run's creation: report a position
        # that covers it (and the thread's release), so the client can read its own answer.
        request.scope["state"]["position"] = await asyncio.to_thread(runtime.store.head)
        if not state.terminal:
            return json_bytes(
                _encode(ChatResult(run=run_view(state))),
                status=202,
                position=request.scope["state"]["position"],
            )
        answer = next((m for m in reversed(state.messages) if m.completed), None)
        message = (
            MessageView(
                id=answer.message_id,
                thread_id=state.thread_id,
                role="assistant",
                content=answer.text,
                created_at=state.ended_at or state.created_at,
                metadata={
                    "domain_hints": state.domain_hints,
                    "tier": state.tier,
                    "tools_invoked": [c.tool for c in state.calls],
                    "episode_id": state.id,
                    "client": msgspec.to_builtins(state.client),
                },
            )
            if answer
            else None
        )
        return json_bytes(
            _encode(ChatResult(run=run_view(state), message=message)),
            position=request.scope["state"]["position"],
        )

    return await idempotent(request, run)


@post(
    "/v1/chat/stream",
    status_code=200,
    summary="Run and stream its events (SSE)",
    opt={"role": "member"},
)
async def chat_stream(request: Req, data: JSONBody[Chat]) -> Stream:
    state = await _chat_run(request, data)
    hub = runtime_of(request).hub
    return Stream(
        hub.run_stream(state.id, 0),
        media_type="text/event-stream",
        headers={
            **SSE_HEADERS,
            "X-Nome-Position": str(request.scope["state"]["position"]),
            "X-Nome-Run-Id": state.id,
        },
    )


router = Router(
    path="/",
    route_handlers=[
        create_run,
        list_runs,
        get_run,
        cancel_run,
        stream_run,
        run_events,
        replay_run,
        run_state_at,
        verify_run,
        chat,
        chat_stream,
    ],
    tags=["runs"],
)
