"""Runs: create, list, cancel; their events, live stream, replay, state and verification
(API.md §3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream

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
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, RESUMABLE, SSE, SSE_OR_NDJSON, errors
from nome_api.schemas import MAX_POSITION, Hint, PageOf, Strict, is_position
from nome_api.streams import frame
from nome_core.bus import Claim, Claimed
from nome_core.runs.commands import CancelRun, StartRun
from nome_core.runs.state import RunState, RunStatus, evolve
from nome_core.runs.verify import Verdict, verify
from nome_core.storage.rows import Row, row_envelope, tenant_of, to_event
from nome_core.values import Tier
from projections.paging import SCORE_CURSOR, decode_cursor, encode_cursor, page_json
from projections.runs import RunView, view_of

_encode = msgspec.json.Encoder().encode
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
UserText = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
Hints = Annotated[list[Hint], msgspec.Meta(max_length=32)]


class CreateRunBody(Strict):
    thread_id: str
    input: UserText
    agent_id: str | None = None
    tier: Tier | None = None
    domain_hints: Hints = []
    if_busy: Literal["reject", "enqueue"] = "reject"


class CancelRunBody(Strict):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


async def start_run(
    request: Req,
    data: Any,
    thread_id: str | None,
    claim: Claim | None,
) -> tuple[RunState, int]:
    """Start a run from a run or chat body, on a new thread when `thread_id` is None; the
    run and the position of its creation."""
    runtime, caller = runtime_of(request), caller_of(request)
    cmd = StartRun(
        run_id=runtime.app.new_id(),
        thread_id=checked_id(thread_id, "thread") if thread_id else runtime.app.new_id(),
        new_thread=None if thread_id else data.input[:80],
        input=data.input,
        agent_id=checked_id(data.agent_id, "agent") if data.agent_id else None,
        tier=data.tier,
        domain_hints=list(data.domain_hints),
        enqueue=data.if_busy == "enqueue",
        creator_roles=sorted(caller.roles),
        client=caller.meta.client,
    )
    started = await runtime.app.runs.start(actor_of(request), cmd, claim=claim)
    if started.runnable and "worker" in runtime.roles:
        runtime.worker.offer(caller.tenant_id, started.run.id)
    return started.run, started.position


@post(
    "/v1/runs",
    status_code=201,
    summary="Start a run",
    opt={"role": "member", **IDEMPOTENT},
    responses=errors(402, 404),
)
async def create_run(request: Req, data: JSONBody[CreateRunBody]) -> Response[RunView]:
    async def run(claim: Claim | None) -> Response[Any]:
        state, position = await start_run(request, data, data.thread_id, claim)
        return json_bytes(_encode(view_of(state)), status=201, position=position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve)
        return json_bytes(_encode(view_of(state)), status=201, position=position)

    return await idempotent(request, run, replay)


@get("/v1/runs", summary="List runs, newest first")
async def list_runs(
    request: Req,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    thread_id: Annotated[str | None, QueryParameter()] = None,
    status: Annotated[RunStatus | None, QueryParameter()] = None,
) -> Response[PageOf[RunView]]:
    runs = runtime_of(request).queries.runs
    page = await runs.page(
        caller_of(request).tenant_id,
        limit=limit,
        cursor=cursor,
        thread_id=thread_id,
        status=status,
    )
    return json_bytes(page)


@get("/v1/runs/{run_id:str}", summary="Get a run")
async def get_run(request: Req, run_id: FromPath[str]) -> Response[RunView]:
    runs = runtime_of(request).queries.runs
    return found(await runs.run(caller_of(request).tenant_id, run_id), "run")


@post(
    "/v1/runs/{run_id:str}/cancel",
    status_code=200,
    summary="Cancel a run",
    opt={"role": "operator"},
    responses=errors(409),
)
async def cancel_run(
    request: Req, run_id: FromPath[str], data: JSONBody[CancelRunBody | None] = None
) -> Response[RunView]:
    cmd = CancelRun(
        run_id=checked_id(run_id, "run"),
        by=caller_of(request).key_id,
        reason=data.reason if data else None,
    )
    outcome = await runtime_of(request).app.runs.cancel(actor_of(request), cmd)
    assert outcome.state is not None
    return json_bytes(_encode(view_of(outcome.state)), position=await reached(request, outcome))


async def own_run_rows(
    request: Req, run_id: str, *, after: int = 0, limit: int | None = None
) -> list[Row]:
    """The run's rows after seq `after` (at most `limit`) from the log, if the run is the
    caller's tenant's (404 otherwise, also for a stream that is not a run)."""
    log = runtime_of(request).log
    checked_id(run_id, "run")
    first = await log.stream_rows(run_id, limit=1 if after else limit)
    if not first or first[0].type != "run.created":
        raise ApiError(404, "no such run")
    if tenant_of(first[0].state) != caller_of(request).tenant_id:
        raise ApiError(404, "no such run")
    if not after:
        return first
    return await log.stream_rows(run_id, after=after, limit=limit)


def _resume_point(request: Req) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return 0
    if not is_position(raw):
        raise ApiError(400, "Last-Event-ID and ?after= must be a non-negative integer (a seq)")
    return int(raw)


@get(
    "/v1/runs/{run_id:str}/stream",
    summary="Stream a run's events live (SSE)",
    media_type=SSE,
    opt=RESUMABLE,
)
async def stream_run(request: Req, run_id: FromPath[str]) -> Stream:
    after = _resume_point(request)
    await own_run_rows(request, run_id, limit=1)
    hub = runtime_of(request).hub
    return Stream(
        hub.run_stream(run_id, after), media_type="text/event-stream", headers=SSE_HEADERS
    )


@get("/v1/runs/{run_id:str}/events", summary="A run's events, paginated by seq")
async def run_events(
    request: Req,
    run_id: FromPath[str],
    after: Annotated[int, QueryParameter(ge=0, le=MAX_POSITION)] = 0,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Response[PageOf[dict[str, Any]]]:
    start = after
    position = decode_cursor(cursor, SCORE_CURSOR)
    if position is not None:
        start = int(position)
    # Only the page is read, however long the run: a 50,000-event run pages as fast as any.
    # The total first, and the page no further: one snapshot while the run goes on.
    log = runtime_of(request).log
    await own_run_rows(request, run_id, limit=1)
    total = await log.version(run_id)
    wanted = min(limit, total - start)
    page = await log.stream_rows(run_id, after=start, limit=wanted) if wanted > 0 else []
    docs = [row_envelope(r) for r in page]
    more = start + limit < total
    next_cursor = encode_cursor(str(start + len(page))) if more else None
    return json_bytes(page_json(docs, next_cursor, total))


@get(
    "/v1/runs/{run_id:str}/replay",
    summary="Replay a recorded run (SSE or NDJSON)",
    opt=SSE_OR_NDJSON,
)
async def replay_run(
    request: Req,
    run_id: FromPath[str],
    format: Annotated[Literal["sse", "ndjson"] | None, QueryParameter()] = None,
) -> Stream:
    rows = await own_run_rows(request, run_id)
    ndjson = format == "ndjson" or (
        format is None and "application/x-ndjson" in request.headers.get("accept", "")
    )

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
    request: Req,
    run_id: FromPath[str],
    at: Annotated[int | None, QueryParameter(ge=1, le=MAX_POSITION)] = None,
) -> RunAt:
    rows = await own_run_rows(request, run_id)
    upto = len(rows) if at is None else at
    if upto > len(rows):
        raise ApiError(404, f"the run has only {len(rows)} events")
    state: RunState | None = None
    for row in rows[:upto]:
        state = evolve(state, to_event(row.state, row.position))
    assert state is not None
    return RunAt(
        seq=upto,
        run=view_of(state),
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
    rows = await own_run_rows(request, run_id)
    return await verify([to_event(r.state, r.position) for r in rows])


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
    ],
    tags=["runs"],
)
