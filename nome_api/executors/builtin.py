"""The built-in tools (API.md §5): clock.now, math.evaluate, thread.note, http.fetch."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from nome_api.addresses import AddressRefused, public_addresses
from nome_api.tls import client_context
from nome_core.clock import Clock
from nome_core.tools.builtin import (
    HttpFetchArgs,
    MathError,
    MathEvaluateArgs,
    ThreadNoteArgs,
    ToolSpec,
    check_arguments,
    evaluate,
)
from nome_core.tools.executor import BackendUnreachable, CallContext, ToolFailed, idempotency_key
from nome_core.tools.state import Call

MAX_BODY = 256 * 1024
_NOTE_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650003")


class BuiltinExecutor:
    """Runs the built-in tools in this process."""

    def __init__(self, clock: Clock, *, fetch_allow_hosts: frozenset[str] = frozenset()) -> None:
        self.clock = clock
        self.fetch_allow_hosts = fetch_allow_hosts

    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        match check_arguments(spec.name, call.arguments):
            case MathEvaluateArgs(expression=expression):
                try:
                    return {"value": evaluate(expression)}
                except MathError as exc:
                    raise ToolFailed(str(exc)) from None
            case ThreadNoteArgs():
                # The note itself lands in the thread with this receipt (nome_core/tools/notes).
                return {"note_id": str(uuid.uuid5(_NOTE_NAMESPACE, call.call_id))}
            case HttpFetchArgs(url=url):
                return await self._fetch(url, idempotency_key(call))
        return {"now": self.clock.now()}

    async def _fetch(self, url: str, key: str) -> dict[str, Any]:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # an unclosed IPv6 bracket, a port out of range
            raise ToolFailed("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolFailed("only http and https URLs can be fetched")
        host = parts.hostname
        if host not in self.fetch_allow_hosts:
            await refuse_private(host, port)
        try:
            async with (
                httpx.AsyncClient(
                    timeout=10.0, follow_redirects=False, verify=client_context()
                ) as client,
                # A server that honours the key answers a repeated attempt of one call
                # once; the call is still never run twice knowingly (it is not idempotent).
                client.stream("GET", url, headers={"Idempotency-Key": key}) as response,
            ):
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY:
                        body = body[:MAX_BODY]
                        break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BackendUnreachable(f"{host} is unreachable ({exc.__class__.__name__})") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"fetch failed: {exc.__class__.__name__}") from None
        return {"status": response.status_code, "body": body.decode("utf-8", "replace")}


async def refuse_private(host: str, port: int) -> None:
    """Refuse loopback, private and link-local targets (checked on every resolved address)."""
    try:
        await public_addresses(host, port)
    except AddressRefused as exc:
        raise ToolFailed(str(exc)) from None
