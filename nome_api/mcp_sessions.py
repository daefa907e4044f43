"""MCP sessions (API.md §11): what an `Mcp-Session-Id` stands for, kept in the read store.

A session is a record in Redis, not an object in a process, so any API process serves any
session and a restarted one still knows it (with `NOME_REDIS_URL=memory://` the store lives in
the process, and its sessions with it). A session lives `TTL_S` from its last use (sliding).

It belongs to the key that opened it: the record is stored under the SHA-256 of that key's id
and the session id together, so another key (of this tenant or another) finds nothing there
and gets the same 404 as for a session that never existed; one lookup refreshes only the
caller's own session, and a Redis dump holds no usable session id.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import msgspec

from nome_api.errors import ApiError
from nome_api.runtime import Runtime

# 24 hours from the last request of the session.
TTL_S = 24 * 3600
# What NOME hands out (token_urlsafe(32): 43 characters); anything else names nothing.
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class McpSession(msgspec.Struct, kw_only=True):
    """An initialized session: who opened it and what was negotiated."""

    tenant_id: str
    key_id: str
    protocol_version: str
    client_name: str
    client_version: str
    created_at: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(McpSession).decode


def redis_key(prefix: str, key_id: str, session_id: str) -> str:
    """Where a key's session is kept: under a hash of both, never the session id itself."""
    digest = hashlib.sha256(f"{key_id}\n{session_id}".encode()).hexdigest()
    return f"{prefix}mcp-session:{digest}"


async def open_session(runtime: Runtime, session: McpSession) -> str:
    """Store a new session; its id."""
    session_id = secrets.token_urlsafe(32)
    where = redis_key(runtime.settings.redis_prefix, session.key_id, session_id)
    await runtime.redis.set(where, _encode(session), ex=TTL_S)
    return session_id


async def resume(runtime: Runtime, key_id: str, session_id: str) -> McpSession:
    """The caller's live session of this id, its life extended; else 404."""
    if not _SESSION_ID.match(session_id):
        raise _no_such_session()
    where = redis_key(runtime.settings.redis_prefix, key_id, session_id)
    raw = await runtime.redis.getex(where, ex=TTL_S)
    if raw is None:
        raise _no_such_session()
    return _decode(raw)


async def end(runtime: Runtime, key_id: str, session_id: str) -> None:
    """End the caller's session of this id; 404 if it has none."""
    if not _SESSION_ID.match(session_id):
        raise _no_such_session()
    where = redis_key(runtime.settings.redis_prefix, key_id, session_id)
    if not await runtime.redis.delete(where):
        raise _no_such_session()


def _no_such_session() -> ApiError:
    return ApiError(404, "no such MCP session (unknown, ended, expired or another key's)")
