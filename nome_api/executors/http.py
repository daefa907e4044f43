"""Calls to package tools served by an `http` endpoint (API.md §6a): one signed POST per call.

The body is `{"tool","arguments","call_id","run_id","tenant_id"}`; `Idempotency-Key` and the
Standard Webhooks `webhook-id` are the call's id, so a tool server can both verify that NOME
sent the call (with the install's signing secret) and recognise a retry of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec
from standardwebhooks import Webhook

from nome_api.executors.builtin import refuse_private
from nome_api.tls import client_context
from nome_core.tools.executor import BackendUnreachable, ToolFailed

MAX_ANSWER: Final = 1024 * 1024
# A host that has not accepted the connection by then is unreachable (the `offline` rule),
# not slow (an `error` receipt): connecting gets at most half the call's budget.
CONNECT_TIMEOUT_S: Final = 10.0
# How much of a failed answer's body goes into the error (and so into the receipt).
ERROR_EXCERPT: Final = 200

_encoder: Final = msgspec.json.Encoder()


async def endpoint_host(url: str, allow_hosts: frozenset[str]) -> str:
    """The host of a package endpoint `url`, once the address rules allow it (else ToolFailed):
    a host outside `allow_hosts` must resolve to public addresses only."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ToolFailed("the tool's endpoint is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolFailed("the tool's endpoint must be an http or https URL")
    host = parts.hostname
    if host not in allow_hosts:
        await refuse_private(host, port)
    return host


async def call_http(
    url: str,
    *,
    tool: str,
    arguments: dict[str, Any],
    call_id: str,
    run_id: str | None,
    tenant_id: str,
    secret: str,
    timeout_s: float,
    allow_hosts: frozenset[str],
    client: httpx.AsyncClient | None = None,
) -> Any:
    """POST one signed call to a package's `http` endpoint; its 2xx JSON answer is the result.
    Raises ToolFailed (the call failed) or BackendUnreachable (the endpoint cannot be reached)."""
    host = await endpoint_host(url, allow_hosts)
    call = {
        "tool": tool,
        "arguments": arguments,
        "call_id": call_id,
        "run_id": run_id,
        "tenant_id": tenant_id,
    }
    try:
        body = _encoder.encode(call)
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise ToolFailed(f"the arguments cannot be sent as JSON: {exc}") from None
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": call_id,
        **_signature_headers(secret, call_id, body),
    }
    timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s / 2))
    try:
        if client is not None:
            status, answer, truncated = await _post(client, url, body, headers, timeout)
        else:
            # A client per call: an AsyncClient is bound to the event loop it first ran on,
            # and calls come from more than one (the worker's, a test's).
            async with httpx.AsyncClient(follow_redirects=False, verify=client_context()) as own:
                status, answer, truncated = await _post(own, url, body, headers, timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise BackendUnreachable(f"{host} is unreachable ({exc.__class__.__name__})") from None
    except httpx.TimeoutException:
        raise ToolFailed(f"the tool did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolFailed(f"the call to the tool failed: {exc.__class__.__name__}") from None
    if not 200 <= status < 300:
        excerpt = answer[:ERROR_EXCERPT].decode("utf-8", "replace")
        raise ToolFailed(f"the tool answered {status}: {excerpt}")
    if truncated:
        raise ToolFailed(f"the tool's answer is larger than {MAX_ANSWER} bytes")
    try:
        # msgspec, not json: it refuses NaN and Infinity, which no receipt could hash.
        return msgspec.json.decode(answer)
    except msgspec.DecodeError:
        raise ToolFailed(f"the tool answered {status} with a body that is not JSON") from None


def _signature_headers(secret: str, call_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers over exactly `body`; `webhook-id` is the call's id, the same
    on every attempt of the call."""
    try:
        webhook = Webhook(secret)
    except Exception:
        # Whatever the library says about it, the secret itself stays out of the message.
        raise ToolFailed("the install's signing secret is not usable") from None
    now = datetime.now(UTC)
    return {
        "webhook-id": call_id,
        # The value `sign` puts into the signed content: whole seconds.
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook.sign(call_id, now, body.decode()),
    }


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    limits: httpx.Timeout,
) -> tuple[int, bytes, bool]:
    """The status, up to MAX_ANSWER bytes of the body, and whether there was more."""
    request = client.build_request("POST", url, content=body, headers=headers, timeout=limits)
    # Never followed, whatever the client was built with: a redirect could lead anywhere,
    # including to an address the rules above refuse.
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        answer = bytearray()
        async for chunk in response.aiter_bytes():
            answer += chunk
            if len(answer) > MAX_ANSWER:
                return response.status_code, bytes(answer[:MAX_ANSWER]), True
        return response.status_code, bytes(answer), False
    finally:
        await response.aclose()
