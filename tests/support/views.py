"""The read models' contents in Redis, for comparing one build with another."""

from __future__ import annotations

from typing import Any

import redis


def dump(client: redis.Redis, prefix: str) -> dict[str, tuple[str, Any]]:
    """Every read-model key under the prefix with its contents, independent of encoding."""
    contents: dict[str, tuple[str, Any]] = {}
    for key in client.scan_iter(match=prefix + "v:*", count=1000):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} at {key!r}")
        contents[key.decode()[len(prefix) :]] = (kind, value)
    return contents
