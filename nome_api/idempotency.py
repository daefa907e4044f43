"""Idempotency-Key: the same key and body within 24 h returns the first response again.

Records live in Redis per tenant and key (not in the log: they hold response bodies, and a
lost record only means a retried request runs once more, with the usual conflict checks).
A record is claimed with SET NX before the command runs, so two concurrent requests with
one key cannot both run it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Response

from nome_api.context import Req, caller_of, runtime_of
from nome_api.errors import ApiError

TTL_S = 24 * 3600
PENDING_TTL_S = 60


class Record(msgspec.Struct, kw_only=True):
    fingerprint: str
    status: int = 0
    body: bytes = b""
    position: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


async def idempotent(request: Req, run: Callable[[], Awaitable[Response[Any]]]) -> Response[Any]:
    """Run a creating command at most once per Idempotency-Key."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await run()
    if not 1 <= len(key) <= 255:
        raise ApiError(400, "Idempotency-Key must be 1 to 255 characters")
    runtime, caller = runtime_of(request), caller_of(request)
    body = await request.body()
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
    ).hexdigest()
    slot = (
        f"{runtime.settings.redis_prefix}idem:{caller.tenant_id}:{caller.key_id}:"
        + hashlib.sha256(key.encode()).hexdigest()
    )
    claimed = await runtime.redis.set(
        slot, _encode(Record(fingerprint=fingerprint)), nx=True, ex=PENDING_TTL_S
    )
    if not claimed:
        raw = await runtime.redis.get(slot)
        if raw is None:  # expired between the two calls: treat as new
            return await idempotent(request, run)
        record = _decode(raw)
        if record.fingerprint != fingerprint:
            raise ApiError(
                409,
                "this Idempotency-Key was used with a different request",
                code="idempotency_mismatch",
            )
        if record.status == 0:
            raise ApiError(
                409,
                "a request with this Idempotency-Key is still in progress",
                headers={"Retry-After": "1"},
            )
        headers = {"Idempotent-Replayed": "true"}
        if record.position is not None:
            headers["X-Nome-Position"] = record.position
        return Response(
            record.body, status_code=record.status, media_type="application/json", headers=headers
        )
    try:
        response = await run()
    except BaseException:
        await runtime.redis.delete(slot)  # nothing was accepted: the key may be used again
        raise
    content = (
        response.content
        if isinstance(response.content, bytes)
        else msgspec.json.encode(response.content)
    )
    record = Record(
        fingerprint=fingerprint,
        status=response.status_code,
        body=content,
        position=response.headers.get("X-Nome-Position"),
    )
    await runtime.redis.set(slot, _encode(record), ex=TTL_S)
    return response
