"""What the gateway remembers between requests, so most requests need no Redis round trip.

- Principals: a key's principal is cached for a short time. Revoking a key evicts it here at
  once and, through Redis pub/sub, in every other API process; the short time to live bounds
  what a lost message could cost.
- Rate limits and client build counters are counted in the process and added to Redis a few
  times a second. A key's limit is checked against the last known total of every process
  plus this process's own count since, so with several API processes it can be exceeded by
  at most what the others counted in one flush interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import structlog

from nome_api.tasks import Tasks
from nome_core.events import Client
from projections.keys import Principal

log = structlog.get_logger("nome.admission")


class PrincipalCache:
    def __init__(self, *, ttl_s: float = 2.0, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        item = self._items.get(digest)
        if item is None:
            return None
        expires, principal = item
        if expires < time.monotonic():
            del self._items[digest]
            return None
        return principal

    def put(self, digest: str, principal: Principal) -> None:
        self._items[digest] = (time.monotonic() + self.ttl_s, principal)
        self._items.move_to_end(digest)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def evict(self, digest: str) -> None:
        self._items.pop(digest, None)


class ClientCount(NamedTuple):
    client: Client
    requests: int
    last_seen_at: str | None


class Meter:
    """Per-key request counts (rate limit) and client build counts, flushed in batches."""

    def __init__(self, redis: Any, prefix: str, *, limit: int, flush_s: float = 0.1) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limit = limit
        self.flush_s = flush_s
        self._pending: dict[str, int] = {}
        self._known: dict[str, int] = {}
        self._clients: dict[tuple[str, str], tuple[int, str]] = {}

    def admit(self, identity: str, now: float) -> int | None:
        """Count one request; None if allowed, else seconds until the window resets."""
        window = int(now) // 60
        key = f"{self.prefix}rl:{identity}:{window}"
        count = self._known.get(key, 0) + self._pending.get(key, 0) + 1
        if count > self.limit:
            return 60 - int(now) % 60
        self._pending[key] = self._pending.get(key, 0) + 1
        return None

    def seen(self, tenant_id: str, client: Client, at: str) -> None:
        field = "\x1f".join([client.surface or "", client.version or "", client.revision or ""])
        count, _ = self._clients.get((tenant_id, field), (0, at))
        self._clients[(tenant_id, field)] = (count + 1, at)

    async def clients(self, tenant_id: str) -> list[ClientCount]:
        """The build identities seen for a tenant, with every process's counts so far."""
        await self.flush()  # include this process's requests so far
        base = f"{self.prefix}clients:{tenant_id}"
        counts = await self.redis.hgetall(f"{base}:requests")
        seen = await self.redis.hgetall(f"{base}:seen")
        found = []
        for field, count in counts.items():
            surface, version, revision = field.decode().split("\x1f")
            last = seen.get(field)
            found.append(
                ClientCount(
                    Client(
                        surface=surface or None, version=version or None, revision=revision or None
                    ),
                    int(count),
                    last.decode() if last else None,
                )
            )
        return found

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        clients, self._clients = self._clients, {}
        if not pending and not clients:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, count in pending.items():
            pipe.incrby(key, count)
            pipe.expire(key, 120)
        for (tenant_id, field), (count, at) in clients.items():
            base = f"{self.prefix}clients:{tenant_id}"
            pipe.hincrby(f"{base}:requests", field, count)
            pipe.hset(f"{base}:seen", field, at)
        try:
            results = await pipe.execute()
        except Exception:
            # Counted again at the next flush rather than lost.
            for key, count in pending.items():
                self._pending[key] = self._pending.get(key, 0) + count
            raise
        current = int(time.time()) // 60
        self._known = {
            key: int(total)
            for key, total in zip(pending, results[0 : 2 * len(pending) : 2], strict=True)
            if key.endswith(f":{current}")
        }


class Admission:
    """The gateway's memory, with the background work that keeps it honest."""

    def __init__(self, redis: Any, prefix: str, *, limit: int) -> None:
        self.redis = redis
        self.channel = f"{prefix}keys:revoked"
        self.principals = PrincipalCache()
        self.meter = Meter(redis, prefix, limit=limit)
        self._tasks = Tasks()

    async def start(self) -> None:
        self._tasks.spawn(self._flush_loop(), "nome-meter")
        self._tasks.spawn(self._revocations(), "nome-revocations")

    async def stop(self) -> None:
        await self._tasks.stop()
        with contextlib.suppress(Exception):
            await self.meter.flush()

    async def revoked(self, digest: str) -> None:
        """A key was revoked: forget it here and tell every other API process."""
        self.principals.evict(digest)
        await self.redis.publish(self.channel, digest)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.meter.flush_s)
            try:
                await self.meter.flush()
            except Exception as exc:
                log.warning("meter_flush_failed", error=str(exc))

    async def _revocations(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.principals.evict(data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Until resubscribed, cached principals still expire within their TTL.
                log.warning("revocation_feed_lost", error=str(exc))
                await asyncio.sleep(1.0)
