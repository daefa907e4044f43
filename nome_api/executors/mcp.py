"""Package tools served by an MCP server over Streamable HTTP (API.md §6a), through the
official MCP Python SDK: its tool definitions (checked at install against the manifest's
hashes) and its `tools/call`.

Each use is one short session: connect, `initialize`, the request(s), close. The SDK runs a
session in anyio task groups; every failure leaves them through the `async with` blocks
below (nothing is left running) and arrives here wrapped in exception groups, which are
unwrapped to tell an unreachable server from a failed call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import anyio
import httpx2
import msgspec
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Implementation, PaginatedRequestParams, TextContent

from nome_api import __version__
from nome_api.executors.http import CONNECT_TIMEOUT_S, endpoint_host
from nome_api.tls import client_context
from nome_core.tools.executor import BackendUnreachable, ToolFailed

# A server whose tools/list never ends cannot hold an install forever.
MAX_PAGES: Final = 100
# How much of an error result's text goes into the error (and so into the receipt).
MAX_ERROR_TEXT: Final = 500
# Peer-supplied protocol error messages are quoted only this far.
MAX_QUOTED: Final = 200

_CLIENT_INFO: Final = Implementation(name="nome", version=__version__)

T = TypeVar("T")


class McpTool(msgspec.Struct, frozen=True):
    """One tool as an MCP server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


async def list_tools(url: str, *, timeout_s: float, allow_hosts: frozenset[str]) -> list[McpTool]:
    """The server's tools (`initialize`, then every page of `tools/list`)."""

    async def every_page(session: ClientSession) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            page = await session.list_tools(params=params)
            tools.extend(
                McpTool(
                    name=tool.name,
                    description=tool.description or "",
                    input_schema=tool.input_schema,
                )
                for tool in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                return tools
            if cursor in seen:
                raise ToolFailed("the MCP server's tools/list repeats a page")
            seen.add(cursor)
        raise ToolFailed(f"the MCP server's tools/list has more than {MAX_PAGES} pages")

    return await _in_session(url, timeout_s, allow_hosts, every_page)


async def call_tool(
    url: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout_s: float,
    allow_hosts: frozenset[str],
) -> Any:
    """`tools/call`: the result's `structuredContent` if it has one, else `{"content": [...]}`.
    An `isError` result raises ToolFailed with its text."""

    async def call(session: ClientSession) -> CallToolResult:
        result = await session.call_tool(tool, arguments)
        if not isinstance(result, CallToolResult):
            # Only with allow_input_required / allow_claimed, which are not asked for.
            raise ToolFailed("the MCP server answered tools/call with another kind of result")
        return result

    result = await _in_session(url, timeout_s, allow_hosts, call)
    if result.is_error:
        raise ToolFailed(_error_text(result))
    if result.structured_content is not None:
        return result.structured_content
    # by_alias: the content as MCP writes it (`mimeType`, `_meta`), not as the SDK names it.
    return {
        "content": [
            item.model_dump(mode="json", by_alias=True, exclude_none=True)
            for item in result.content
        ]
    }


async def _in_session(
    url: str,
    timeout_s: float,
    allow_hosts: frozenset[str],
    work: Callable[[ClientSession], Awaitable[T]],
) -> T:
    """`work` in an initialized session with the server at `url`, all within `timeout_s`."""
    host = ""
    timeout = httpx2.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s / 2))
    try:
        # anyio's deadline, not asyncio's: it is what the SDK's task groups are built on.
        with anyio.fail_after(timeout_s):
            host = await endpoint_host(url, allow_hosts)
            # follow_redirects is not consulted by the SDK, which follows a redirect only
            # within the endpoint's origin (the host that passed the address rules).
            async with (
                httpx2.AsyncClient(
                    timeout=timeout, follow_redirects=False, verify=client_context()
                ) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write, client_info=_CLIENT_INFO) as session,
            ):
                await session.initialize()
                return await work(session)
    except ToolFailed:
        raise
    except Exception as exc:
        raise _classified(exc, host, timeout_s) from None


def _classified(exc: Exception, host: str, timeout_s: float) -> ToolFailed:
    """What a failure means for the call: the server cannot be reached (BackendUnreachable,
    the policy's `offline` rule), or the call failed (ToolFailed)."""
    leaves = list(_leaves(exc))
    # A failed connection cancels the rest of the session: look for it among all of them.
    for leaf in leaves:
        if isinstance(leaf, httpx2.ConnectError | httpx2.ConnectTimeout):
            return BackendUnreachable(f"{host} is unreachable ({leaf.__class__.__name__})")
    for leaf in leaves:
        if isinstance(leaf, ToolFailed):
            return leaf
        if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
            return ToolFailed(f"the MCP server did not answer within {timeout_s:g} s")
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return ToolFailed(f"the MCP server answered an error: {_quoted(leaf.message)}")
        if isinstance(leaf, httpx2.HTTPError):
            return ToolFailed(f"the call to the MCP server failed: {leaf.__class__.__name__}")
    first = leaves[0] if leaves else exc
    return ToolFailed(f"MCP protocol error: {first.__class__.__name__}: {_quoted(str(first))}")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _error_text(result: CallToolResult) -> str:
    text = "\n".join(item.text for item in result.content if isinstance(item, TextContent))
    text = text.strip() or "the MCP tool returned an error result"
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _quoted(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"
