"""Redis GETs of concurrent requests sent together: one MGET per turn of the event loop.

A document read is one GET, and under load redis-py's per-command cost (taking a pooled
connection, a timeout, a write system call, the reply) is most of what such a request
costs. Every GET asked for while the loop runs its ready callbacks joins one MGET sent when
they are done, so a burst of reads pays that cost once (auto-pipelining). A lone read still
goes out on the same turn of the loop: it waits for nothing.
"""

from __future__ import annotations

import asyncio

import redis.asyncio


class GetBatcher:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pending: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def get(self, key: str) -> asyncio.Future[bytes | None]:
        """The value at `key`, or None, as a future to await."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((key, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        # The loop keeps only weak references to tasks.
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        try:
            values = await self._client.mget([key for key, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            # Each waiting request fails as its own GET would have.
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), value in zip(batch, values, strict=True):
            # A request whose client went away has cancelled its future.
            if not future.done():
                future.set_result(value)
