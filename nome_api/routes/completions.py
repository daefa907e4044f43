"""OpenAI-compatible chat (API.md §10): the tenant's agents as models, and a chat completion
as one run of an agent on a thread, answered whole or streamed as Chat Completions chunks.

The stream is a reader of the run's log like every other (nome_api/streams.py), rendered in
OpenAI's wire format; the run itself is an ordinary run, replayed, verified and audited as
any other. Errors on these routes take OpenAI's shape (nome_api/errors.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from litestar import Response, Router, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from nome_api.context import Req, actor_of, caller_of, json_bytes, runtime_of
from nome_api.errors import ApiError, Issue, OpenAIError, error_response, openai_error
from nome_api.idempotency import idempotent, idempotent_stream, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, SSE, errors
from nome_api.routes.chat import ChatBody
from nome_api.routes.runs import SSE_HEADERS, start_run
from nome_api.streams import KEEPALIVE, frame_type
from nome_core.agents.state import default_agent_id
from nome_core.bus import Claim, Claimed
from nome_core.clock import parse_time
from nome_core.runs.events import TERMINAL_TYPES, ErrorInfo, Usage
from nome_core.runs.state import RunState, evolve
from nome_core.threads.commands import CreateThread, HistoryMessage, HistoryRole
from projections.agents import AgentView
from projections.paging import MAX_LIMIT

# The tenant's default agent, whatever its name: the model a client names without knowing
# NOME's agents.
DEFAULT_MODEL = "nome"
THREAD_HEADER = "x-nome-thread-id"
THREAD_KEY = "nome_thread_id"
# Between the texts of two of the run's messages (a turn's words before its tool calls,
# and the answer after them), in the stream and in the whole answer alike.
SEPARATOR = "\n\n"
# The run's input, bounded as a run's is (routes/runs.py: UserText).
MAX_INPUT = 100_000
JSON = "application/json"
DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode


# -- the request --------------------------------------------------------------------------


class ChatCompletionContentPart(msgspec.Struct, kw_only=True):
    """One part of a message's content; only text parts are read."""

    type: str
    text: str | None = None


class ChatCompletionInputMessage(msgspec.Struct, kw_only=True):
    """One message of the conversation a request sends."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ChatCompletionContentPart] | None = None
    tool_calls: object | None = None
    function_call: object | None = None


class ChatCompletionStreamOptions(msgspec.Struct, kw_only=True):
    """`include_usage`: a last chunk with the usage and no choices."""

    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """A Chat Completions request. Fields not named here (temperature, top_p, stop,
    max_tokens, seed, ...) are accepted and ignored, as API.md §10 says."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: Annotated[list[ChatCompletionInputMessage], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: ChatCompletionStreamOptions | None = None
    metadata: dict[str, str] | None = None
    n: int | None = None
    tools: list[object] | None = None
    tool_choice: object | None = None
    functions: list[object] | None = None
    function_call: object | None = None
    response_format: object | None = None
    user: str | None = None


# -- the answers --------------------------------------------------------------------------


class OpenAIModel(msgspec.Struct, kw_only=True):
    """An agent as a model: `nome` (the default agent), its name, or its id."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(msgspec.Struct, kw_only=True):
    """The workspace's agents as models."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class CompletionUsage(msgspec.Struct, kw_only=True):
    """The run's usage (tokens are words, as everywhere in NOME)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A whole completion; streamed, the same answer comes as `chat.completion.chunk`s."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage


class ChatCompletionChunkDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: ChatCompletionChunkDelta
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One `data:` line of a streamed completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: CompletionUsage | None = None


def _openai_errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error answers of these statuses, in OpenAI's shape: the descriptions of
    `errors(...)` (their codes are NOME's), and a 500 for a run that failed."""
    specs = {
        status: dataclasses.replace(spec, data_container=OpenAIError)
        for status, spec in errors(*(s for s in statuses if s != 500)).items()
    }
    if 500 in statuses:
        specs[500] = ResponseSpec(
            data_container=OpenAIError,
            description="server_error: the run failed; `code` is its error's (model_error ...)",
            generate_examples=False,
            media_type=JSON,
        )
    return specs


# Every status the gateway and the error map can answer, which the shared documentation
# would otherwise describe with the contract's error body.
_GATEWAY = (400, 401, 403, 429, 503)


# -- models -------------------------------------------------------------------------------


class _Page(msgspec.Struct):
    data: list[AgentView]
    next_cursor: str | None = None


_decode_page = msgspec.json.Decoder(_Page).decode


async def _models(request: Req) -> list[tuple[str, AgentView]]:
    """The tenant's agents but the default one, each under its model id, oldest first: its
    name, held by the oldest live agent of that name; a later agent of a name already held
    (or named `nome`) is a model by its agent id."""
    agents_query, tenant_id = runtime_of(request).queries.agents, caller_of(request).tenant_id
    agents: list[AgentView] = []
    cursor: str | None = None
    while True:
        page = _decode_page(await agents_query.page(tenant_id, limit=MAX_LIMIT, cursor=cursor))
        agents += page.data
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    default_id = default_agent_id(tenant_id)
    held: set[str] = {DEFAULT_MODEL}
    models: list[tuple[str, AgentView]] = []
    for agent in sorted(agents, key=lambda a: (a.created_at, a.id)):
        if agent.id == default_id:
            continue
        name = agent.id if agent.name in held else agent.name
        held.add(name)
        models.append((name, agent))
    return models


async def _agent_for(request: Req, model: str) -> str | None:
    """The agent a model id names (None: the default agent); 404 if none."""
    if model == DEFAULT_MODEL:
        return None
    for model_id, agent in await _models(request):
        if model_id == model:
            return agent.id
    raise ApiError(
        404,
        f"The model `{model}` does not exist: GET /v1/models lists this workspace's agents",
        code="model_not_found",
        param="model",
    )


def _unix(moment: str) -> int:
    return int(parse_time(moment).timestamp())


async def _model_list(request: Req) -> list[OpenAIModel]:
    runtime, tenant_id = runtime_of(request), caller_of(request).tenant_id
    tenant = await runtime.queries.tenants.state(tenant_id)
    owner = tenant.name if tenant is not None else tenant_id
    default = await runtime.queries.agents.agent(tenant_id, default_agent_id(tenant_id))
    # The default agent is made by the tenant's first run; until then it is as old as the
    # tenant.
    since = msgspec.json.decode(default, type=AgentView).created_at if default else None
    since = since or (tenant.created_at if tenant is not None else None)
    models = [OpenAIModel(id=DEFAULT_MODEL, created=_unix(since) if since else 0, owned_by=owner)]
    for model_id, agent in await _models(request):
        models.append(OpenAIModel(id=model_id, created=_unix(agent.created_at), owned_by=owner))
    return models


@get("/v1/models", summary="The workspace's agents, as models", responses=_openai_errors(*_GATEWAY))
async def list_models(request: Req) -> Response[OpenAIModelList]:
    body = OpenAIModelList(data=await _model_list(request))
    return json_bytes(_encode(body))


@get(
    "/v1/models/{model_id:path}",
    summary="One agent, as a model",
    responses=_openai_errors(*_GATEWAY, 404),
)
async def get_model(request: Req, model_id: FromPath[str]) -> Response[OpenAIModel]:
    # A path parameter: an agent's name may hold a slash.
    wanted = model_id.lstrip("/")
    for model in await _model_list(request):
        if model.id == wanted:
            return json_bytes(_encode(model))
    raise ApiError(404, f"The model `{wanted}` does not exist", code="model_not_found")


# -- completions --------------------------------------------------------------------------


class Conversation(NamedTuple):
    """A request's messages as a run sees them: its input, and what was said before."""

    input: str
    history: list[tuple[HistoryRole, str]]


def _unsupported(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="unsupported_parameter", param=param)


def _refuse_unsupported(data: ChatCompletionRequest) -> None:
    """Client-side tools, several choices and structured output are refused: NOME's agents
    run their own tools, inside NOME, with policy, approvals and receipts."""
    if data.tools or data.functions:
        param = "tools" if data.tools else "functions"
        raise _unsupported(
            "client-side tools are not supported: an agent's own tools run inside NOME "
            "(give the agent its tools with POST /v1/agents)",
            param,
        )
    for name, choice in (("tool_choice", data.tool_choice), ("function_call", data.function_call)):
        if choice not in (None, "none", "auto"):
            raise _unsupported(f"`{name}` is not supported: there are no client-side tools", name)
    if data.n is not None and data.n != 1:
        raise _unsupported("only one choice is made (`n` = 1)", "n")
    kind = data.response_format.get("type") if isinstance(data.response_format, dict) else None
    if data.response_format is not None and kind != "text":
        raise _unsupported("only the `text` response format is supported", "response_format")


def _text(message: ChatCompletionInputMessage, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for part in content:
        if part.type != "text":
            raise _unsupported(
                f"content parts of type `{part.type}` are not supported (text only)",
                f"messages[{index}].content",
            )
        texts.append(part.text or "")
    return "\n".join(texts)


# OpenAI's `developer` messages are what `system` ones were before them.
_ROLES: dict[str, HistoryRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def _conversation(messages: Sequence[ChatCompletionInputMessage]) -> Conversation:
    """The last message is the user's input; the ones before it are the history."""
    history: list[tuple[HistoryRole, str]] = []
    for index, message in enumerate(messages):
        if message.role in ("tool", "function") or message.tool_calls or message.function_call:
            raise _unsupported(
                "tool calls and tool results are not supported in messages: there are no "
                "client-side tools",
                f"messages[{index}]",
            )
        if index == len(messages) - 1:
            break
        text = _text(message, index)
        if text:
            history.append((_ROLES[message.role], text))
    last = len(messages) - 1
    if messages[last].role != "user":
        raise ApiError(
            400,
            "the last message must be the user's: it is the run's input",
            param=f"messages[{last}].role",
        )
    text = _text(messages[last], last)
    if not text.strip():
        raise ApiError(400, "the last user message is empty", param=f"messages[{last}].content")
    if len(text) > MAX_INPUT:
        raise ApiError(
            422,
            "the request is not valid",
            code="validation_failed",
            issues=[
                Issue(
                    path=["messages", last, "content"],
                    message=f"Expected `str` of length <= {MAX_INPUT}",
                )
            ],
        )
    return Conversation(text, history)


def _continued_thread(request: Req, data: ChatCompletionRequest) -> str | None:
    """The thread a request continues: `metadata.nome_thread_id` or `X-Nome-Thread-Id`."""
    header = request.headers.get(THREAD_HEADER)
    named = (data.metadata or {}).get(THREAD_KEY)
    if header and named and header != named:
        raise ApiError(
            400,
            f"X-Nome-Thread-Id and metadata.{THREAD_KEY} name different threads",
            param=f"metadata.{THREAD_KEY}",
        )
    thread_id = header or named
    return checked_id(thread_id, "thread") if thread_id else None


async def _start(
    request: Req,
    agent_id: str | None,
    conversation: Conversation,
    thread_id: str | None,
    claim: Claim | None,
) -> tuple[RunState, int]:
    """The completion's run: on the thread continued, or on a new thread that starts with
    the request's history (made first, in a commit of its own), or on a new thread made
    with the run."""
    body = ChatBody(input=conversation.input, agent_id=agent_id)
    if thread_id is None and conversation.history:
        app, caller = runtime_of(request).app, caller_of(request)
        opening = next((t for r, t in conversation.history if r == "user"), conversation.input)
        cmd = CreateThread(
            thread_id=app.new_id(),
            title=opening[:80],
            metadata={},
            history=tuple(
                HistoryMessage(message_id=app.new_id(), role=role, content=text)
                for role, text in conversation.history
            ),
            client=caller.meta.client,
        )
        await app.threads.handle(actor_of(request), cmd)
        thread_id = cmd.thread_id
    return await start_run(request, body, thread_id, claim)


@post(
    "/v1/chat/completions",
    status_code=200,
    summary="A chat completion: one run of an agent (OpenAI-compatible)",
    opt={"role": "member", **IDEMPOTENT, "media_types": (JSON, SSE)},
    responses=_openai_errors(*_GATEWAY, 402, 404, 409, 413, 422, 500),
)
async def create_completion(
    request: Req, data: JSONBody[ChatCompletionRequest]
) -> Response[ChatCompletion]:
    _refuse_unsupported(data)
    conversation = _conversation(data.messages)
    thread_id = _continued_thread(request, data)
    agent_id = await _agent_for(request, data.model)
    include_usage = bool(data.stream_options and data.stream_options.include_usage)

    async def answer(started: RunState, position: int) -> Response[Any]:
        if data.stream:
            return _streamed(request, started, data.model, include_usage, position)
        return await _whole(request, started, data.model)

    async def run(claim: Claim | None) -> Response[Any]:
        return await answer(*await _start(request, agent_id, conversation, thread_id, claim))

    async def replay(claimed: Claimed) -> Response[Any]:
        started, _, position = await result_of(request, claimed, evolve)
        return await answer(started, position)

    if data.stream:
        return await idempotent_stream(request, run, replay)
    return await idempotent(request, run, replay)


def _run_headers(run: RunState, position: int) -> dict[str, str]:
    return {
        "X-Nome-Run-Id": run.id,
        "X-Nome-Thread-Id": run.thread_id,
        "X-Nome-Position": str(position),
    }


def _failure(status: str, error: ErrorInfo | None, reason: str | None) -> ApiError:
    """How a run that did not complete answers: failed (500, its error's code), cancelled
    (409), or still going while this process stops (503)."""
    if status == "failed":
        info = error or ErrorInfo(code="internal", message="the run failed")
        return ApiError(500, f"the run failed: {info.message}", code=info.code)
    if status == "cancelled":
        message = "the run was cancelled" + (f": {reason}" if reason else "")
        return ApiError(409, message, code="run_cancelled")
    return ApiError(503, "the server is stopping; the run goes on", code="unavailable")


async def _whole(request: Req, run: RunState, model: str) -> Response[Any]:
    """The answer once the run has ended, however long it waits on approvals."""
    runtime = runtime_of(request)
    async for frame in runtime.hub.run_frames(run.id, 0):
        if frame_type(frame) in TERMINAL_TYPES:
            break
    state = await runtime.log.call(runtime.app.runs.get, run.tenant_id, run.id) or run
    # The answer was appended by the worker: a position that covers it.
    headers = _run_headers(state, await runtime.log.head())
    if state.status != "completed":
        error = _failure(state.status, state.error, None)
        # The run is in the log: asking again would start another one.
        error.headers = {**headers, "x-should-retry": "false"}
        return error_response(request, error)
    said = [m.text for m in state.messages if m.completed and m.text]
    completion = ChatCompletion(
        id=f"chatcmpl-{state.id}",
        created=_unix(state.created_at),
        model=model,
        choices=[ChatCompletionChoice(message=ChatCompletionMessage(content=SEPARATOR.join(said)))],
        usage=_usage(state.usage),
    )
    return Response(_encode(completion), status_code=200, media_type=JSON, headers=headers)


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


def _streamed(
    request: Req, run: RunState, model: str, include_usage: bool, position: int
) -> Stream:
    chunks = _chunks(request, run, model, include_usage)
    headers = {**SSE_HEADERS, **_run_headers(run, position)}
    return Stream(chunks, media_type=SSE, headers=headers)


class _Said(msgspec.Struct):
    message_id: str
    text: str


class _Ended(msgspec.Struct):
    usage: Usage | None = None
    error: ErrorInfo | None = None
    reason: str | None = None


class _SaidFrame(msgspec.Struct):
    data: _Said


class _EndedFrame(msgspec.Struct):
    data: _Ended


_said = msgspec.json.Decoder(_SaidFrame).decode
_ended = msgspec.json.Decoder(_EndedFrame).decode
_ENDINGS = {"run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled"}


def _data(frame: bytes) -> bytes:
    """A frame's envelope (its `data:` line; nome_api/streams.py writes it last)."""
    return frame[frame.index(b"\ndata: ") + len(b"\ndata: ") :]


async def _chunks(
    request: Req, run: RunState, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """The run's log as Chat Completions chunks: the role first, then its text as it is
    said, the finish, the usage if asked for, and [DONE]; a failure as an error before
    [DONE]. Keepalive comments go out while the run is quiet (waiting on an approval)."""
    created = _unix(run.created_at)

    def chunk(
        delta: ChatCompletionChunkDelta | None,
        finish: Literal["stop"] | None = None,
        usage: CompletionUsage | None = None,
    ) -> bytes:
        choices = (
            [ChatCompletionChunkChoice(delta=delta, finish_reason=finish)]
            if delta is not None
            else []
        )
        body = ChatCompletionChunk(
            id=f"chatcmpl-{run.id}", created=created, model=model, choices=choices, usage=usage
        )
        return b"data: " + _encode(body) + b"\n\n"

    yield chunk(ChatCompletionChunkDelta(role="assistant", content=""))
    speaking: str | None = None  # the message whose text went out last
    async for frame in runtime_of(request).hub.run_frames(run.id, 0):
        if frame == KEEPALIVE:
            yield KEEPALIVE
            continue
        kind = frame_type(frame)
        if kind == "message.delta":
            said = _said(_data(frame)).data
            if said.text:
                gap = SEPARATOR if speaking not in (None, said.message_id) else ""
                speaking = said.message_id
                yield chunk(ChatCompletionChunkDelta(content=gap + said.text))
        elif kind in _ENDINGS:
            ended = _ended(_data(frame)).data
            if kind == "run.completed":
                yield chunk(ChatCompletionChunkDelta(), finish="stop")
                if include_usage:
                    yield chunk(None, usage=_usage(ended.usage or Usage()))
            else:
                error = _failure(_ENDINGS[kind], ended.error, ended.reason)
                yield b"data: " + openai_error(error.status, error.message, error.code) + b"\n\n"
            yield DONE
            return
    # The process is stopping (the hub closed every stream): the run goes on without us.
    error = _failure("active", None, None)
    yield b"data: " + openai_error(error.status, error.message, error.code) + b"\n\n"
    yield DONE


router = Router(
    path="/",
    route_handlers=[list_models, get_model, create_completion],
    tags=["openai"],
)
