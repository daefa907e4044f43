"""Idempotency-Key (API.md §0): the same key and body within 24 h answer the first response
again, and the command behind them takes effect once, whatever crashes in between.

Two layers:
- The claim: the key goes into the database with the command's events, in the same
  transaction, under a primary key (nome_core/storage/claims.py). A retry after a crash, a
  restart or a Redis wipe finds it and is answered from the log (`replay`), and a second
  command with the key fails at its append, so it never makes a second resource.
- The answer cache: the first response's bytes in Redis for 24 h, so an ordinary retry gets
  exactly them without reading the log, and a pending marker, so a duplicate that arrives
  while the first is running hears 409 "in progress" instead of running too.

A route gives `run(claim)`, which runs its command with the claim, and `replay(claimed)`,
which answers from where the claim points in the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Response

from nome_api.context import Req, caller_of, runtime_of
from nome_api.errors import ApiError
from nome_core.bus import Claim, Claimed, ClaimTaken
from nome_core.errors import DomainError
from nome_core.events import Event
from nome_core.storage.rows import Row, to_event

TTL_S = 24 * 3600
PENDING_TTL_S = 60
S = TypeVar("S")


class Record(msgspec.Struct, kw_only=True):
    fingerprint: str
    status: int = 0
    body: bytes = b""
    position: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode
Run = Callable[[Claim | None], Awaitable[Response[Any]]]
Replay = Callable[[Claimed], Awaitable[Response[Any]]]


async def idempotent(
    request: Req, run: Run, replay: Replay, *, tenant_id: str | None = None
) -> Response[Any]:
    """Run a creating command at most once per Idempotency-Key. The claim lives with the
    tenant the command acts on (`tenant_id`: the platform operator acts on a customer's),
    by default the caller's."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await run(None)
    if not 1 <= len(key) <= 255:
        raise ApiError(400, "Idempotency-Key must be 1 to 255 characters")
    runtime = runtime_of(request)
    tenant = tenant_id or caller_of(request).tenant_id
    body = await request.body()
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
    ).hexdigest()
    key_sha256 = idempotency_key_sha256(request)
    slot = f"{runtime.settings.redis_prefix}idem:{tenant}:{key_sha256}"

    async def first_answer() -> Response[Any] | None:
        """The first request's answer, if there is one already (cached, or in the log)."""
        raw = await runtime.redis.get(slot)
        if raw is not None:
            return _cached(_decode(raw), fingerprint)
        claimed = await runtime.log.claimed(tenant, key_sha256)
        if claimed is None:
            return None
        if claimed.fingerprint != fingerprint:
            raise _mismatch()
        return await _remember(runtime.redis, slot, fingerprint, await replay(claimed))

    answered = await first_answer()
    if answered is not None:
        return answered
    pending = _encode(Record(fingerprint=fingerprint))
    if not await runtime.redis.set(slot, pending, nx=True, ex=PENDING_TTL_S):
        answered = await first_answer()
        if answered is None:  # the other request gave up meanwhile: try again
            return await idempotent(request, run, replay, tenant_id=tenant_id)
        return answered
    try:
        response = await run(Claim(key_sha256, fingerprint))
    except (ClaimTaken, DomainError, ApiError):
        # Another request with this key won (a crash left no pending marker, or it was
        # wiped): its command stands, and its answer is this one's too. A command refused
        # for another reason is refused: the key may be used again.
        await runtime.redis.delete(slot)
        claimed = await runtime.log.claimed(tenant, key_sha256)
        if claimed is None:
            raise
        if claimed.fingerprint != fingerprint:
            raise _mismatch() from None
        return await _remember(runtime.redis, slot, fingerprint, await replay(claimed))
    except BaseException:
        await runtime.redis.delete(slot)  # nothing was accepted: the key may be used again
        raise
    return await _remember(runtime.redis, slot, fingerprint, response)


async def idempotent_stream(request: Req, run: Run, replay: Replay) -> Response[Any]:
    """The claim alone, for an answer that is a stream (it cannot be cached): a retry
    streams what the first request started."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await run(None)
    if not 1 <= len(key) <= 255:
        raise ApiError(400, "Idempotency-Key must be 1 to 255 characters")
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    body = await request.body()
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
    ).hexdigest()
    key_sha256 = idempotency_key_sha256(request)

    async def first() -> Response[Any] | None:
        claimed = await runtime.log.claimed(tenant, key_sha256)
        if claimed is None:
            return None
        if claimed.fingerprint != fingerprint:
            raise _mismatch()
        return await replay(claimed)

    answered = await first()
    if answered is not None:
        return answered
    try:
        return await run(Claim(key_sha256, fingerprint))
    except (ClaimTaken, DomainError, ApiError):
        answered = await first()
        if answered is None:
            raise
        return answered


def idempotency_key_sha256(request: Req) -> str:
    """The claim's key: the caller's own (the same key from another API key is another
    request), hashed so a key of any length fits."""
    key = request.headers.get("idempotency-key", "")
    return hashlib.sha256(f"{caller_of(request).key_id}\n{key}".encode()).hexdigest()


def _cached(record: Record, fingerprint: str) -> Response[Any]:
    if record.fingerprint != fingerprint:
        raise _mismatch()
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


def _mismatch() -> ApiError:
    return ApiError(
        409, "this Idempotency-Key was used with a different request", code="idempotency_mismatch"
    )


async def _remember(
    redis: Any, slot: str, fingerprint: str, response: Response[Any]
) -> Response[Any]:
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
    await redis.set(slot, _encode(record), ex=TTL_S)
    return response


async def result_of(
    request: Req, claimed: Claimed, evolve: Callable[[S | None, Event], S | None]
) -> tuple[S, Event, int]:
    """Where a claim points: its stream as it stood right after the claiming command, that
    command's last event of the stream, and a position covering the whole command. That is
    the log's head now: the command may have written other streams after this one (a run's
    thread and ledger), and the claim does not say where its commit ended."""
    log = runtime_of(request).log
    rows: list[Row] = await log.stream_rows(claimed.stream_id, limit=claimed.version)
    state: S | None = None
    for row in rows:
        state = evolve(state, to_event(row.state))
    assert state is not None and rows
    last = rows[-1]
    return state, to_event(last.state, last.position), await log.head()
