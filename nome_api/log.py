"""The event store from async code. Every read runs in a worker thread and gives up after a
few seconds with 503 `unavailable`: with the database down or stalled a client hears so at
once instead of after minutes, and a stalled read never holds a request for longer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from nome_core.bus import Claimed
from nome_core.errors import Unavailable
from nome_core.storage.rows import Row
from nome_core.storage.store import EventStore

P = ParamSpec("P")
T = TypeVar("T")


class Log:
    def __init__(self, store: EventStore, *, timeout_s: float = 5.0) -> None:
        self.store = store
        self.timeout_s = timeout_s

    async def call(self, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any blocking read of the store (or of state folded from it), bounded."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.to_thread(read, *args, **kwargs)
        except TimeoutError:
            raise Unavailable("the event store did not answer in time") from None

    async def head(self) -> int:
        return await self.call(self.store.head)

    async def version(self, stream_id: str) -> int:
        return await self.call(self.store.version, stream_id)

    async def stream_rows(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Row]:
        return await self.call(self.store.stream_rows, stream_id, after=after, limit=limit)

    async def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Row]:
        return await self.call(self.store.read, after, limit, upto=upto)

    async def claimed(self, tenant_id: str, key_sha256: str) -> Claimed | None:
        return await self.call(self.store.claimed, tenant_id, key_sha256)
