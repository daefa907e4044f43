"""The gate every request passes: request id, build identity, auth, rate limit, logging,
metrics and read-your-writes waits.

One middleware, run on every request, so it is kept lean: a key's principal usually comes
from the short-lived cache and the counters are batched (nome_api/admission.py), so most
requests reach the route without a Redis round trip; the request log line and the HTTP
metrics share its one wrapper around `send`.

A route's `opt` says who may call it: `role` (default viewer) or any of `roles`, or
`public` (no key).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from nome_api import stream_tokens
from nome_api.errors import ApiError, answer_for
from nome_api.ids import is_uuid
from nome_api.oidc import InvalidToken, OidcVerifier
from nome_api.runtime import Runtime
from nome_core.events import Client, Meta
from nome_core.keys import secrets as key_secrets
from nome_core.keys.roles import effective_roles
from nome_core.tenants.state import tenant_id_for
from projections.keys import Principal

log = structlog.get_logger("nome.http")

_PRINTABLE = re.compile(r"^[\x20-\x7e]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CLIENT_HEADERS = (
    (b"x-nome-client-surface", "surface"),
    (b"x-nome-client-version", "version"),
    (b"x-nome-client-revision", "revision"),
)
# Unique without a system call per request: a random prefix per process and a counter.
_request_ids = (f"{uuid.uuid4().hex[:16]}{n:016x}" for n in itertools.count(1))


class Caller(msgspec.Struct, frozen=True):
    """The authenticated caller of a request."""

    key_id: str
    tenant_id: str
    name: str
    roles: frozenset[str]
    meta: Meta

    def can(self, role: str) -> bool:
        return role in self.roles


Observe = Callable[[str, str | None, int, float], None]


def gateway(runtime: Runtime, observe: Observe) -> Any:
    """Build the middleware factory for this runtime; `observe(method, route template,
    status, seconds)` is called once per request (the HTTP metrics)."""
    verifier = (
        OidcVerifier(
            issuer=runtime.settings.oidc_issuer or "",
            audience=runtime.settings.oidc_audience or "",
            jwks_url=runtime.settings.oidc_jwks_url or "",
        )
        if runtime.settings.auth == "oidc"
        else None
    )

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
            headers = dict(scope["headers"])
            rid = headers.get(b"x-request-id", b"").decode("latin-1")
            request_id = rid if _REQUEST_ID.match(rid) else next(_request_ids)
            state["request_id"] = request_id
            status_holder = [500]
            answered = [False]

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answered[0] = True
                    status_holder[0] = message["status"]
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ]
                await send(message)

            try:
                handler = scope.get("route_handler")
                opt = getattr(handler, "opt", {}) or {}
                client = _client_identity(headers)
                state["client"] = client
                public = opt.get("public") or scope["path"].startswith("/schema")
                if not public:
                    stream_token = _stream_token(scope, headers)
                    caller = await (
                        _from_stream_token(runtime, stream_token, scope["path"], client, request_id)
                        if stream_token is not None
                        else _authenticate(runtime, verifier, headers, client, request_id)
                    )
                    state["caller"] = caller
                    # One role, or any of several (`roles`: a tenant's admin or the platform).
                    roles = opt.get("roles") or (opt.get("role", "viewer"),)
                    if not any(caller.can(role) for role in roles):
                        raise ApiError(403, f"this needs the {' or '.join(roles)} role")
                    min_position = headers.get(b"x-nome-min-position")
                    # Commands too: one that looks something up in a read model (an
                    # approval to answer) reads the caller's own writes as a query does.
                    if min_position is not None:
                        await wait_for_position(runtime, _position(min_position))
                await app(scope, receive, send_with_id)
            except Exception as error:
                if answered[0]:
                    raise  # a stream broke after its head went out: nothing left to say
                from litestar import Request

                request: Request[Any, Any, Any] = Request(scope)
                # A Litestar Response is not an ASGI app: render it first.
                response = answer_for(request, error).to_asgi_response(None, request)
                await response(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                template = scope.get("path_template")
                observe(scope["method"], template, status_holder[0], seconds)
                caller = state.get("caller")
                log.info(
                    "request",
                    method=scope["method"],
                    route=template or scope["path"],
                    status=status_holder[0],
                    ms=round(seconds * 1000, 2),
                    request_id=request_id,
                    tenant=caller.tenant_id if caller else None,
                )

        return middleware

    return factory


def _client_identity(headers: dict[bytes, bytes]) -> Client:
    values: dict[str, str] = {}
    for header, field in _CLIENT_HEADERS:
        raw = headers.get(header)
        if raw is None:
            continue
        text = raw.decode("latin-1")
        if not _PRINTABLE.match(text):
            raise ApiError(400, f"{header.decode()} must be 1 to 64 printable ASCII characters")
        values[field] = text
    return Client(**values)


def _position(raw: bytes) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, "X-Nome-Min-Position must be a non-negative integer")
    return value


async def wait_for_position(
    runtime: Runtime, position: int, *, seconds: float | None = None
) -> None:
    """Wait until every read model has processed `position` (read-your-writes); 503 if
    they have not within the limit."""
    limit = runtime.settings.min_position_wait_s if seconds is None else seconds
    if not await runtime.queries.tracking.reached(runtime.redis, position, seconds=limit):
        raise ApiError(
            503,
            f"the read models have not reached position {position} yet",
            headers={"Retry-After": "1"},
        )


async def _authenticate(
    runtime: Runtime,
    verifier: OidcVerifier | None,
    headers: dict[bytes, bytes],
    client: Client,
    request_id: str,
) -> Caller:
    raw = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = raw.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token")
    token = token.strip()
    admission = runtime.admission
    if verifier is not None and not token.startswith(key_secrets.PREFIX):
        principal = await _from_jwt(verifier, token)
        identity = hashlib.sha256(principal.key_id.encode()).hexdigest()
    else:
        if not key_secrets.is_well_formed(token):
            raise ApiError(401, "invalid API key")
        identity = key_secrets.digest(token)
        cached = admission.principals.get(identity)
        if cached is None:
            keys = runtime.queries.keys
            found = await keys.principal(identity)
            if found is None and await _keys_behind(runtime):
                # Perhaps a key just made by another process (`nome keys create`): once the
                # keys read model has caught up with the log, look again.
                found = await keys.principal(identity)
            if found is None:
                if await _keys_catching_up(runtime):
                    raise ApiError(503, "the service is starting up", headers={"Retry-After": "1"})
                raise ApiError(401, "invalid or revoked API key")
            cached = found
            admission.principals.put(identity, cached)
        principal = cached
    retry = admission.meter.admit(identity[:24], time.time())
    if retry is not None:
        raise ApiError(429, "rate limit exceeded", headers={"Retry-After": str(retry)})
    if client.surface or client.version or client.revision:
        admission.meter.seen(principal.tenant_id, client, runtime.clock.now())
    return Caller(
        key_id=principal.key_id,
        tenant_id=principal.tenant_id,
        name=principal.name,
        roles=effective_roles(principal.roles),
        meta=Meta(principal=principal.key_id, client=client, request_id=request_id),
    )


def _stream_token(scope: Scope, headers: dict[bytes, bytes]) -> str | None:
    """The `?stream_token=` of a GET without an Authorization header (an EventSource, which
    cannot send one: API.md §12); None otherwise."""
    query = scope.get("query_string", b"")
    if scope["method"] != "GET" or b"authorization" in headers or b"stream_token=" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("stream_token")
    return values[0] if values else None


async def _from_stream_token(
    runtime: Runtime, token: str, path: str, client: Client, request_id: str
) -> Caller:
    """The caller a stream token was issued to, if it was issued for exactly this path; it
    counts against the same rate limit as the key's own requests."""
    grant = await stream_tokens.redeem(runtime, token, path)
    retry = runtime.admission.meter.admit(grant.identity[:24], time.time())
    if retry is not None:
        raise ApiError(429, "rate limit exceeded", headers={"Retry-After": str(retry)})
    return Caller(
        key_id=grant.key_id,
        tenant_id=grant.tenant_id,
        name=grant.name,
        roles=effective_roles(grant.roles),
        meta=Meta(principal=grant.key_id, client=client, request_id=request_id),
    )


async def _keys_behind(runtime: Runtime) -> bool:
    """Whether the keys read model was behind the log (it has caught up when this returns)."""
    head = await runtime.log.head()
    keys = [runtime.read_models.keys.name]
    tracking = runtime.queries.tracking
    (standing,) = await tracking.read(runtime.redis, keys)
    if standing.position >= head:
        return False
    await tracking.reached(runtime.redis, head, seconds=1.0, names=keys)
    return True


async def _keys_catching_up(runtime: Runtime) -> bool:
    (standing,) = await runtime.queries.tracking.read(
        runtime.redis, [runtime.read_models.keys.name]
    )
    return standing.status != "live"


async def _from_jwt(verifier: OidcVerifier, token: str) -> Principal:
    try:
        claims = await asyncio.to_thread(verifier.verify, token)
    except InvalidToken as exc:
        raise ApiError(401, f"invalid token: {exc}") from exc
    tenant = str(claims.get("nome_tenant") or "")
    roles = claims.get("nome_roles") or []
    if not tenant or not isinstance(roles, list):
        raise ApiError(401, "the token has no nome_tenant or nome_roles claim")
    return Principal(
        key_id=f"oidc:{claims.get('sub', '')}",
        tenant_id=tenant if is_uuid(tenant) else tenant_id_for(tenant),
        name=str(claims.get("sub", "")),
        roles=[str(r) for r in roles],
    )
