"""Redis connections for the read side: a real server, or the in-process store of `memory://`."""

from __future__ import annotations

import threading
from typing import Any

import redis
import redis.asyncio

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _memory_server(url: str) -> Any:
    # One in-process server per URL, shared by the sync projector and the async API clients.
    import fakeredis

    with _memory_lock:
        server = _memory_servers.get(url)
        if server is None:
            server = _memory_servers[url] = fakeredis.FakeServer()
        return server


def connect(url: str) -> redis.Redis:
    """A synchronous client (projector thread, CLI)."""
    if url.startswith("memory://"):
        import fakeredis

        return fakeredis.FakeRedis(server=_memory_server(url))
    return redis.Redis.from_url(url)


def connect_async(url: str) -> redis.asyncio.Redis:
    """An asyncio client (API handlers)."""
    if url.startswith("memory://"):
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=_memory_server(url))
    # No per-command socket timeout: redis-py wraps every command in asyncio.wait_for when
    # one is set, a task per command on the API's hottest path. Connecting still times out.
    # A blocking pool: a burst of more concurrent requests than connections waits for one
    # (up to 5 s) instead of failing with "Too many connections".
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=5, socket_timeout=None, socket_connect_timeout=5
    )
    return redis.asyncio.Redis(connection_pool=pool)
