"""The MCP server (API.md §11): `/mcp` speaks the Model Context Protocol over Streamable HTTP
(revisions 2025-06-18 and 2025-11-25) and offers the caller tenant's tools to any MCP client,
behind the gateway every route is behind (Bearer keys, roles, rate limits, the error map).

Why not the official SDK's server: its Streamable HTTP session manager keeps each session (a
transport and a task group running the server loop) in the memory of the process that opened
it, so only that process could serve the session and a restart would lose it, both of which
§11 rules out; and its ASGI app would sit beside Litestar rather than behind the gateway.
What NOME serves is request and answer only (it never sends the client requests or
notifications, so there is no stream to keep or resume), so this module answers each JSON-RPC
message itself, with nothing kept between requests but the session record in Redis
(nome_api/mcp_sessions.py), and uses the SDK's *types* (`mcp.types`) to validate params and
write results: the shapes on the wire are the SDK's.

The transport, as NOME serves it:

- `POST /mcp` carries one JSON-RPC message (batches left the protocol in 2025-06-18). A request
  is answered `application/json`, or as one SSE `message` event to a client that accepts only
  `text/event-stream`; a notification or a response is 202 without a body.
- `initialize` opens a session (`Mcp-Session-Id` on its answer); every other message names
  it: 400 without one, 404 for one that is unknown, ended, expired or another key's. A request
  for a method NOME does not serve (a newer client's `server/discover`, resources, prompts) is
  JSON-RPC -32601, with or without a session.
- `MCP-Protocol-Version`: a value that names no protocol revision is 400, and so is one other
  than the session's. Before a session there is none to compare: a newer client's probe at
  its own revision gets its -32601 and falls back to `initialize`, as the official client
  does. `GET /mcp` is 405 (no server-initiated stream). `DELETE /mcp` ends the session (204).
- A request with an `Origin` not in `NOME_ALLOWED_ORIGINS` is 403 (DNS rebinding: a web page
  must not reach a local server through the browser); a request without one is not a browser's.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
import structlog
from litestar import Response, Router, delete, post
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, JSONBody
from mcp import types
from mcp.types.version import KNOWN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from nome_api import __version__
from nome_api.context import Req, actor_of, caller_of, runtime_of
from nome_api.errors import ApiError, ErrorBody
from nome_api.gateway import Caller
from nome_api.ids import is_uuid
from nome_api.mcp_sessions import McpSession, end, open_session, resume
from nome_api.openapi import SSE
from nome_api.runtime import Runtime
from nome_core.calls.commands import CallTool
from nome_core.calls.state import DirectCall
from nome_core.errors import Invalid, NotFound
from nome_core.tools.builtin import ArgumentsInvalid, ToolSpec
from nome_core.tools.policy import Policy, decide_call
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call
from projections.approvals import ApprovalRef, ApprovalView
from projections.tools import policy_view, receipt_view

log = structlog.get_logger("nome.mcp")

# The revisions served, oldest first; a client asking for another gets the newest.
SUPPORTED_VERSIONS: Final = ("2025-06-18", "2025-11-25")
LATEST_VERSION: Final = SUPPORTED_VERSIONS[-1]
# Names of protocol revisions at all: a header naming none of them is malformed (400).
_REVISIONS: Final = frozenset(KNOWN_PROTOCOL_VERSIONS) | frozenset(SUPPORTED_VERSIONS)
# Result fields of the stateless 2026-07-28 revision, which the SDK's models always carry.
_NEWER_FIELDS: Final = {"result_type", "ttl_ms", "cache_scope"}
# The role a direct call needs (POST /v1/tools/call); a key without it is offered no tool.
CALLER_ROLE: Final = "member"
JSON: Final = "application/json"
SERVER_INFO: Final = types.Implementation(name="nome", title="NOME", version=__version__)
INSTRUCTIONS: Final = (
    "The tools of your NOME workspace. Each call is a direct tool call: the workspace's policy "
    "applies and it is recorded with a receipt (the result). A call that needs an approval "
    "answers with an error naming the approval id; once a person approves it, call the tool "
    "again with the same arguments and _meta.nome_approval_id set to that id for its receipt."
)

_encode = msgspec.json.Encoder().encode
Int53 = Annotated[int, msgspec.Meta(ge=-(2**53 - 1), le=2**53 - 1)]
RequestId = Int53 | Annotated[str, msgspec.Meta(max_length=256)]


class McpMessage(msgspec.Struct, kw_only=True):
    """One JSON-RPC 2.0 message: a request (`id` and `method`), a notification (`method`
    only), or a response to the server (`id` and `result` or `error`)."""

    jsonrpc: Literal["2.0"]
    id: RequestId | msgspec.UnsetType | None = msgspec.UNSET
    method: Annotated[str, msgspec.Meta(max_length=256)] | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, object] | msgspec.UnsetType | None = msgspec.UNSET
    result: dict[str, object] | msgspec.UnsetType = msgspec.UNSET
    error: dict[str, object] | msgspec.UnsetType = msgspec.UNSET


class McpError(msgspec.Struct, kw_only=True):
    code: int
    message: str


class McpAnswer(msgspec.Struct, kw_only=True):
    """The JSON-RPC 2.0 response to a request: its `result`, or an `error` (-32601 for a
    method NOME does not serve, -32602 for params that do not fit it)."""

    jsonrpc: Literal["2.0"]
    id: int | str
    result: dict[str, object] | msgspec.UnsetType = msgspec.UNSET
    error: McpError | msgspec.UnsetType = msgspec.UNSET


class RpcError(Exception):
    """A JSON-RPC error answer to the request being served."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


SessionHeader = Annotated[
    str | None,
    HeaderParameter(name="Mcp-Session-Id", description="the session, from initialize's answer"),
]
VersionHeader = Annotated[
    str | None,
    HeaderParameter(
        name="MCP-Protocol-Version",
        description="the session's protocol revision (2025-06-18 or 2025-11-25)",
    ),
]
OriginHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Origin", description="a browser's page origin: only NOME_ALLOWED_ORIGINS"
    ),
]


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ErrorBody,
        description=description,
        generate_examples=False,
        media_type=JSON,
    )


TRANSPORT_ERRORS: Final = {
    400: _error(
        "bad_request: malformed JSON, no Mcp-Session-Id, or an MCP-Protocol-Version that "
        "names no revision or not the session's",
    ),
    403: _error("forbidden: the key lacks the role, or the Origin is not allowed"),
    404: _error("not_found: no such session (unknown, ended, expired or another key's)"),
}


class Served(msgspec.Struct, kw_only=True):
    """What serving one request of a session needs: who asks, and how."""

    runtime: Runtime
    caller: Caller
    request: Req


Method = Callable[[Served, dict[str, Any]], Awaitable[tuple[BaseModel, int | None]]]


@post(
    "/",
    status_code=200,
    summary="MCP: one JSON-RPC message over Streamable HTTP",
    opt={"media_types": (JSON, SSE)},
    responses={
        202: ResponseSpec(None, description="a notification or a response: accepted"),
        **TRANSPORT_ERRORS,
    },
)
async def post_message(
    request: Req,
    data: JSONBody[McpMessage],
    session_id: SessionHeader = None,
    protocol_version: VersionHeader = None,
    origin: OriginHeader = None,
) -> Response[McpAnswer]:
    runtime, caller = runtime_of(request), caller_of(request)
    _check_origin(runtime, origin)
    _check_revision(protocol_version)
    asked = _request(data)
    params = data.params if isinstance(data.params, dict) else {}
    if asked is not None and asked[0] == "initialize":
        return await _initialize(request, runtime, caller, asked[1], params)
    if asked is not None and asked[0] not in METHODS and session_id is None:
        return _answer(request, asked[1], error=_not_found(asked[0]))
    if session_id is None:
        raise ApiError(400, "Mcp-Session-Id is required: initialize opens a session")
    session = await resume(runtime, caller.key_id, session_id)
    if protocol_version is not None and protocol_version != session.protocol_version:
        raise ApiError(
            400,
            f"MCP-Protocol-Version {protocol_version} is not the session's "
            f"({session.protocol_version})",
        )
    if asked is None:
        # Accepted, no body (a JSON content type would promise one).
        return Response(b"", status_code=202, media_type="text/plain")
    method, request_id = asked
    serve = METHODS.get(method)
    if serve is None:
        return _answer(request, request_id, error=_not_found(method))
    served = Served(runtime=runtime, caller=caller, request=request)
    try:
        result, position = await serve(served, params)
    except RpcError as error:
        return _answer(request, request_id, error=McpError(code=error.code, message=error.message))
    return _answer(request, request_id, result=_dump(result), position=position)


@delete(
    "/",
    status_code=204,
    summary="MCP: end a session",
    responses=TRANSPORT_ERRORS,
)
async def end_session(
    request: Req,
    session_id: SessionHeader = None,
    protocol_version: VersionHeader = None,
    origin: OriginHeader = None,
) -> None:
    runtime, caller = runtime_of(request), caller_of(request)
    _check_origin(runtime, origin)
    _check_revision(protocol_version)
    if session_id is None:
        raise ApiError(400, "Mcp-Session-Id is required: the session to end")
    await end(runtime, caller.key_id, session_id)
    log.info("mcp_session_ended", tenant=caller.tenant_id)


# -- the transport's checks and answers ----------------------------------------------------


def _check_origin(runtime: Runtime, origin: str | None) -> None:
    if origin is not None and _origin(origin) not in _allowed(runtime.settings.allowed_origins):
        raise ApiError(403, f"the origin {origin[:200]!r} may not use /mcp (NOME_ALLOWED_ORIGINS)")


@functools.lru_cache(maxsize=8)
def _allowed(setting: str) -> frozenset[str]:
    return frozenset(_origin(item) for item in setting.split(",") if item.strip())


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def _check_revision(version: str | None) -> None:
    if version is not None and version not in _REVISIONS:
        raise ApiError(
            400,
            f"MCP-Protocol-Version {version[:64]!r} is no protocol revision; this server "
            f"speaks {' and '.join(SUPPORTED_VERSIONS)}",
        )


def _request(message: McpMessage) -> tuple[str, int | str] | None:
    """A request's method and id; None for a notification or a response to the server (400
    for anything else)."""
    method, request_id = message.method, message.id
    if isinstance(method, msgspec.UnsetType):
        if isinstance(request_id, msgspec.UnsetType) or (
            isinstance(message.result, msgspec.UnsetType)
            and isinstance(message.error, msgspec.UnsetType)
        ):
            raise ApiError(400, "not a JSON-RPC request, notification or response")
        return None
    if isinstance(request_id, msgspec.UnsetType):
        return None
    if request_id is None:
        raise ApiError(400, "a JSON-RPC request's id is a string or an integer, never null")
    return method, request_id


def _not_found(method: str) -> McpError:
    return McpError(code=types.METHOD_NOT_FOUND, message=f"method not found: {method[:256]}")


def _answer(
    request: Req,
    request_id: int | str,
    *,
    result: dict[str, Any] | None = None,
    error: McpError | None = None,
    headers: dict[str, str] | None = None,
    position: int | None = None,
) -> Response[Any]:
    """A request's JSON-RPC response, as JSON or (to a client that takes only SSE) as one
    `message` event."""
    answer = McpAnswer(
        jsonrpc="2.0",
        id=request_id,
        result=result if result is not None else msgspec.UNSET,
        error=error if error is not None else msgspec.UNSET,
    )
    body = _encode(answer)
    headers = dict(headers or {})
    if position is not None:
        headers["X-Nome-Position"] = str(position)
    if _wants_sse(request.headers.get("accept", "")):
        return Response(b"event: message\ndata: " + body + b"\n\n", media_type=SSE, headers=headers)
    return Response(body, media_type=JSON, headers=headers)


def _wants_sse(accept: str) -> bool:
    types_accepted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if types_accepted & {JSON, "application/*", "*/*"}:
        return False
    return SSE in types_accepted


def _dump(result: BaseModel) -> dict[str, Any]:
    """A result as the 2025 revisions write it (the SDK's aliases, no nulls)."""
    return result.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=_NEWER_FIELDS)


M = TypeVar("M", bound=BaseModel)


def _params(model: type[M], params: dict[str, Any]) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        raise RpcError(types.INVALID_PARAMS, f"invalid params: {where}: {first['msg']}") from None


# -- the methods ---------------------------------------------------------------------------


async def _initialize(
    request: Req, runtime: Runtime, caller: Caller, request_id: int | str, params: dict[str, Any]
) -> Response[Any]:
    """Open a session at the client's revision if NOME speaks it, else at the newest."""
    try:
        asked = _params(types.InitializeRequestParams, params)
    except RpcError as error:
        return _answer(request, request_id, error=McpError(code=error.code, message=error.message))
    version = asked.protocol_version if asked.protocol_version in SUPPORTED_VERSIONS else None
    session = McpSession(
        tenant_id=caller.tenant_id,
        key_id=caller.key_id,
        protocol_version=version or LATEST_VERSION,
        client_name=asked.client_info.name[:128],
        client_version=asked.client_info.version[:64],
        created_at=runtime.clock.now(),
    )
    session_id = await open_session(runtime, session)
    log.info(
        "mcp_session_opened",
        tenant=caller.tenant_id,
        protocol=session.protocol_version,
        client=session.client_name,
    )
    result = types.InitializeResult(
        protocol_version=session.protocol_version,
        capabilities=types.ServerCapabilities(tools=types.ToolsCapability(list_changed=False)),
        server_info=SERVER_INFO,
        instructions=INSTRUCTIONS,
    )
    return _answer(
        request, request_id, result=_dump(result), headers={"Mcp-Session-Id": session_id}
    )


async def _ping(served: Served, params: dict[str, Any]) -> tuple[BaseModel, int | None]:
    _params(types.RequestParams, params)
    return types.EmptyResult(), None


async def _list_tools(served: Served, params: dict[str, Any]) -> tuple[BaseModel, int | None]:
    """The tools the key may call: all on one page."""
    asked = _params(types.PaginatedRequestParams, params)
    if asked.cursor is not None:
        raise RpcError(types.INVALID_PARAMS, "no such cursor: tools/list has one page")
    tools = [_tool(spec, policy) for spec, policy in await _callable(served)]
    return types.ListToolsResult(tools=tools), None


async def _callable(served: Served) -> list[tuple[ToolSpec, Policy]]:
    """The tenant's tools whose policy lets this key call them directly (not `deny`)."""
    caller = served.caller
    if not caller.can(CALLER_ROLE):
        return []
    runtime, tenant = served.runtime, caller.tenant_id
    specs = await runtime.queries.registry.specs(tenant)
    policies = await runtime.app.tools.policies(tenant, specs)
    return [
        (spec, policy)
        for spec, policy in zip(specs, policies, strict=True)
        if decide_call(policy, calls_so_far=0, roles=caller.roles).decision != "deny"
    ]


def _tool(spec: ToolSpec, policy: Policy) -> types.Tool:
    return types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input_schema,
        # Said both ways: a tool without the hint counts as destructive (the spec's default).
        annotations=types.ToolAnnotations(destructive_hint=spec.dangerous),
        _meta={
            "nome_source": spec.source,
            "nome_policy": msgspec.to_builtins(policy_view(policy)),
        },
    )


async def _call_tool(served: Served, params: dict[str, Any]) -> tuple[BaseModel, int | None]:
    """A direct tool call (API.md §5) under the key's roles; or, with
    `_meta.nome_approval_id`, the receipt of the approved call that asked for it."""
    asked = _params(types.CallToolRequestParams, params)
    runtime, caller = served.runtime, served.caller
    if not caller.can(CALLER_ROLE):
        refused = f"this key cannot call tools: a direct call needs the {CALLER_ROLE} role"
        return _failed(refused), None
    if await runtime.queries.registry.get(caller.tenant_id, asked.name) is None:
        raise RpcError(types.INVALID_PARAMS, f"no such tool: {asked.name[:128]}")
    meta: dict[str, Any] = dict(asked.meta or {})
    approval_id, thread_id = meta.get("nome_approval_id"), meta.get("nome_thread_id")
    for name, value in (("nome_approval_id", approval_id), ("nome_thread_id", thread_id)):
        if value is not None and not isinstance(value, str):
            raise RpcError(types.INVALID_PARAMS, f"_meta.{name} is a string")
    arguments = dict(asked.arguments or {})
    if approval_id is not None:
        return await _approved(served, approval_id, asked.name, arguments), None
    if thread_id is not None and not is_uuid(thread_id):
        return _failed("no such thread"), None
    app = runtime.app
    cmd = CallTool(
        call_id=app.new_id(),
        work_item_id=app.new_id(),
        tool=asked.name,
        arguments=arguments,
        thread_id=thread_id,
        roles=caller.roles,
    )
    try:
        outcome = await app.calls.call(actor_of(served.request), cmd)
    except ArgumentsInvalid as exc:
        # An error result, not a protocol error: the model sees why and may fix them.
        return _failed(f"the arguments do not fit {asked.name}: {exc.message}"), None
    except (NotFound, Invalid) as exc:
        return _failed(exc.message), None
    assert outcome.state is not None
    return _call_result(outcome.state.call), outcome.position


async def _approved(
    served: Served, approval_id: str, tool: str, arguments: dict[str, Any]
) -> types.CallToolResult:
    """The call an approval was asked for, if it is this call: its receipt once it has one.
    The approver's request ran it (or the worker's sweep will); it runs once."""
    runtime, caller = served.runtime, served.caller
    located = await _located(runtime, caller.tenant_id, approval_id)
    if located is None or located[0].run_id is not None:
        raise RpcError(types.INVALID_PARAMS, f"no such approval of a direct call: {approval_id}")
    calls = runtime.app.calls
    state = await runtime.log.call(calls.get, caller.tenant_id, located[0].stream_id)
    if state is None:
        raise RpcError(types.INVALID_PARAMS, f"no such approval of a direct call: {approval_id}")
    call = state.call
    if call.tool != tool or call.arguments != arguments:
        raise RpcError(
            types.INVALID_PARAMS,
            f"approval {approval_id} was asked for another call: call {call.tool} with the "
            "arguments it was asked for",
        )
    if _never_started(state):
        # Approved, but the approver's process died before it started the call.
        await calls.finish(actor_of(served.request), state.id)
        state = await runtime.log.call(calls.get, caller.tenant_id, state.id) or state
    return _call_result(state.call)


def _never_started(state: DirectCall) -> bool:
    call = state.call
    return call.receipt is None and call.approval_status == "approved" and state.attempt is None


async def _located(
    runtime: Runtime, tenant_id: str, approval_id: str
) -> tuple[ApprovalRef, ApprovalView] | None:
    """Where an approval's call is (as POST /v1/approvals/{id}/approve finds it)."""
    if not is_uuid(approval_id):
        return None
    approvals = runtime.queries.approvals
    located = await approvals.located(tenant_id, approval_id)
    if located is None:
        # Perhaps asked for right after it was made, before another process's projector
        # had it: once the approvals have caught up with the log, look again.
        head = await runtime.log.head()
        names = [runtime.read_models.approvals.name]
        limit = runtime.settings.min_position_wait_s
        if await runtime.queries.tracking.reached(runtime.redis, head, seconds=limit, names=names):
            located = await approvals.located(tenant_id, approval_id)
    return located


def _call_result(call: Call) -> types.CallToolResult:
    """A call as it stands: its receipt, or the approval it waits on."""
    if call.receipt is not None:
        return _receipt_result(call.receipt)
    if call.approval_id is not None and call.approval_status in (None, "pending"):
        text = (
            f"{call.tool} needs an approval: approval {call.approval_id} is pending. Once it "
            f"is approved, call {call.tool} again with the same arguments and "
            f'_meta.nome_approval_id = "{call.approval_id}" for its receipt.'
        )
        return types.CallToolResult(
            content=[types.TextContent(text=text)],
            structured_content={"approval_id": call.approval_id},
            is_error=True,
        )
    return _failed("the call is still running: ask again for its receipt")


def _receipt_result(receipt: ToolReceipt) -> types.CallToolResult:
    """The receipt is the result (and, as JSON, its text): the tool's answer with what NOME
    recorded of the call; anything but `ok` is an error result."""
    view = msgspec.to_builtins(receipt_view(receipt))
    return types.CallToolResult(
        content=[types.TextContent(text=_encode(view).decode())],
        structured_content=view,
        is_error=receipt.status != "ok",
    )


def _failed(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


METHODS: Final[dict[str, Method]] = {
    "ping": _ping,
    "tools/list": _list_tools,
    "tools/call": _call_tool,
}

router = Router(path="/mcp", route_handlers=[post_message, end_session], tags=["mcp"])
