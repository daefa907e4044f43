"""Chat: a run on a new or given thread, answered when it ends or streamed (API.md §3)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Response, Router, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from nome_api.context import Req, json_bytes, runtime_of
from nome_api.idempotency import idempotent, idempotent_stream, result_of
from nome_api.openapi import IDEMPOTENT, SSE, errors
from nome_api.routes.runs import SSE_HEADERS, Hints, UserText, start_run
from nome_api.schemas import Strict
from nome_api.streams import frame_type
from nome_core.bus import Claim, Claimed
from nome_core.runs.events import TERMINAL_TYPES
from nome_core.runs.state import RunState, evolve
from nome_core.values import Tier
from projections.runs import RunView, view_of
from projections.threads import MessageView

_encode = msgspec.json.Encoder().encode
# A chat answers once the run ends, or once it waits on a person.
CHAT_STOPS = TERMINAL_TYPES | {"approval.requested"}


class ChatBody(Strict):
    """A run, on a new thread when `thread_id` is absent."""

    input: UserText
    thread_id: str | None = None
    agent_id: str | None = None
    tier: Tier | None = None
    domain_hints: Hints = []
    if_busy: Literal["reject", "enqueue"] = "reject"


class ChatResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    run: RunView
    message: MessageView | None = None


def _answer(state: RunState) -> MessageView | None:
    """The run's last completed message, as its thread shows it."""
    answer = next((m for m in reversed(state.messages) if m.completed), None)
    if answer is None:
        return None
    return MessageView(
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


@post(
    "/v1/chat",
    status_code=200,
    summary="Run and wait for the answer",
    opt={"role": "member", **IDEMPOTENT},
    responses={
        202: ResponseSpec(
            ChatResult, description="the run waits on an approval", generate_examples=False
        ),
        **errors(402, 404),
    },
)
async def chat(request: Req, data: JSONBody[ChatBody]) -> Response[ChatResult]:
    async def run(claim: Claim | None) -> Response[Any]:
        started, _ = await start_run(request, data, data.thread_id, claim)
        return await _answered(request, started)

    async def replay(claimed: Claimed) -> Response[Any]:
        # The run the first request started, as it stands now (the first answer may never
        # have reached the client: it waits for the run as the first request did).
        started, _, _ = await result_of(request, claimed, evolve)
        return await _answered(request, started)

    return await idempotent(request, run, replay)


async def _answered(request: Req, started: RunState) -> Response[Any]:
    """The chat's answer: once the run ends (200) or waits on a person (202)."""
    runtime = runtime_of(request)
    # Follow the run's frames until it ends or waits on a person; fold it once then.
    async for sse in runtime.hub.run_frames(started.id, 0):
        if frame_type(sse) in CHAT_STOPS:
            break
    state = await runtime.log.call(runtime.app.runs.get, started.tenant_id, started.id)
    state = state or started
    # The answer was appended by the worker, after the run's creation: report a position
    # that covers it (and the thread's release), so the client can read its own answer.
    position = await runtime.log.head()
    if not state.terminal:
        return json_bytes(_encode(ChatResult(run=view_of(state))), status=202, position=position)
    result = ChatResult(run=view_of(state), message=_answer(state))
    return json_bytes(_encode(result), position=position)


@post(
    "/v1/chat/stream",
    status_code=200,
    summary="Run and stream its events (SSE)",
    media_type=SSE,
    opt={"role": "member", **IDEMPOTENT},
    responses=errors(402, 404),
)
async def chat_stream(request: Req, data: JSONBody[ChatBody]) -> Response[Any]:
    async def run(claim: Claim | None) -> Response[Any]:
        state, position = await start_run(request, data, data.thread_id, claim)
        return _stream(request, state, position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve)
        return _stream(request, state, position)

    return await idempotent_stream(request, run, replay)


def _stream(request: Req, run: RunState, position: int) -> Stream:
    """The run's events from its first, live to its end."""
    return Stream(
        runtime_of(request).hub.run_stream(run.id, 0),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Nome-Position": str(position), "X-Nome-Run-Id": run.id},
    )


router = Router(path="/", route_handlers=[chat, chat_stream], tags=["runs"])
