"""Stream tokens (API.md §12): a browser's EventSource cannot send an Authorization header, so
a signed-in page asks for a token good for one SSE path for 60 seconds and puts it in the URL.

A token is a random secret kept in Redis under its SHA-256 (so a leaked Redis dump holds no
usable token, and a lookup never compares the secret itself) with the caller's principal and
the exact path it opens. It carries the hash of the key that asked for it: redeeming checks
that key still resolves, so revoking a key ends its tokens at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

import msgspec

from nome_api.errors import ApiError
from nome_api.runtime import Runtime
from nome_core.clock import format_time, parse_time

TTL_S = 60
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The GET SSE routes a token may open, with the role each needs (that of the route itself).
STREAM_PATHS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/v1/events"), "viewer"),
    (re.compile(rf"/v1/runs/{_UUID}/stream"), "viewer"),
    (re.compile(rf"/v1/runs/{_UUID}/replay"), "viewer"),
)


class Grant(msgspec.Struct, kw_only=True):
    """What a token stands for: who asked, for which path, and how to tell they still may."""

    key_id: str
    tenant_id: str
    name: str
    roles: list[str]
    path: str
    # The SHA-256 of the API key that asked; None for an OIDC caller, whose JWT has no
    # revocation here (the token then lives its 60 s like the JWT would).
    key_sha256: str | None
    # The rate-limit identity of the caller, the same one its bearer requests count against.
    identity: str


_encode = msgspec.json.Encoder().encode
_decode_grant = msgspec.json.Decoder(Grant).decode


def role_for(path: str) -> str | None:
    """The role a stream path needs; None if no token may be issued for it."""
    for pattern, role in STREAM_PATHS:
        if pattern.fullmatch(path):
            return role
    return None


def redis_key(prefix: str, token: str) -> str:
    """Where a token's grant is kept: under the token's SHA-256, never the token itself."""
    return f"{prefix}stream-token:{hashlib.sha256(token.encode()).hexdigest()}"


def _key(runtime: Runtime, token: str) -> str:
    return redis_key(runtime.settings.redis_prefix, token)


async def issue(runtime: Runtime, grant: Grant) -> tuple[str, str]:
    """Store a new token for `grant`: (token, expires_at)."""
    token = secrets.token_urlsafe(32)
    expires_at = parse_time(runtime.clock.now()) + timedelta(seconds=TTL_S)
    await runtime.redis.set(_key(runtime, token), _encode(grant), ex=TTL_S)
    return token, format_time(expires_at)


async def redeem(runtime: Runtime, token: str, path: str) -> Grant:
    """The grant of a live token for exactly this path, whose key is not revoked; else 401."""
    raw = await runtime.redis.get(_key(runtime, token))
    if raw is None:
        raise ApiError(401, "invalid or expired stream token")
    grant = _decode_grant(raw)
    if grant.path != path:
        raise ApiError(401, "the stream token was issued for another path")
    if (
        grant.key_sha256 is not None
        and await runtime.queries.keys.principal(grant.key_sha256) is None
    ):
        raise ApiError(401, "the key that issued this stream token was revoked")
    return grant
