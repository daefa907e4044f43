"""Log followers with side effects (processors): each follows the global log from its own
tracked position and, for the events it wants, performs an effect whose outcome it records
as events.

The outcome is appended, version-checked, to a stream the effect owns, so recording it twice
is impossible and a crashed follower resumes at its tracked position without doing twice
what it recorded. The position lives in Redis; if it is lost, the follower starts over and
finds each effect already recorded. One process follows each follower at a time (a lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, Protocol

import structlog

from nome_api.jobs.leases import Lease
from nome_api.streams import LogSignal
from nome_api.tasks import Tasks
from nome_core.events import Event
from nome_core.storage.rows import Row, to_event
from nome_core.storage.store import EventStore

log = structlog.get_logger("nome.followers")


class Follower(Protocol):
    name: str
    # The event types it wants: others are passed over without decoding.
    types: frozenset[str]

    async def handle(self, event: Event) -> float | None:
        """Perform the event's effect and record its outcome; or say how many seconds to
        wait before it is due (the follower does not move past it until then)."""
        ...


class FollowerHost:
    def __init__(
        self,
        store: EventStore,
        redis: Any,
        prefix: str,
        signal: LogSignal,
        followers: list[Follower],
        *,
        page: int = 500,
        poll_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.redis = redis
        self.prefix = prefix
        self.signal = signal
        self.followers = followers
        self.page = page
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.owner = f"follower-{uuid.uuid4().hex[:12]}"
        self._tasks = Tasks()

    def position_key(self, follower: Follower) -> str:
        return f"{self.prefix}follow:{follower.name}:position"

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(f), name=f"nome-follow-{f.name}") for f in self.followers
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def step(self, follower: Follower) -> float | None:
        """Handle the next page of the log for `follower`. None when the log has more at
        once; else 0 when it has reached the head, or the seconds until an event it stopped
        at is due."""
        key = self.position_key(follower)
        position = int(await self.redis.get(key) or 0)
        rows: list[Row] = await asyncio.to_thread(self.store.read, position, self.page)
        for row in rows:
            if row.type in follower.types:
                wait = await follower.handle(to_event(row.state, row.position))
                if wait is not None:
                    await self.redis.set(key, position)
                    return max(wait, 0.001)
            position = row.position
        await self.redis.set(key, position)
        return None if len(rows) == self.page else 0.0

    async def _loop(self, follower: Follower) -> None:
        lease = Lease(self.redis, f"{self.prefix}follow:{follower.name}:lease", self.owner, 10.0)
        try:
            while True:
                seen = self.signal.generation
                wait: float | None = 0.0
                try:
                    if await lease.hold():
                        wait = await self.step(follower)
                except Exception:
                    log.exception("follower_failed", follower=follower.name)
                    wait = self.retry_s
                if wait == 0.0:
                    # At the head: until the log moves (or the poll, the watchdog).
                    await self.signal.wait(self.poll_s, seen)
                elif wait is not None:
                    await asyncio.sleep(wait)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(lease.release())
