"""Where each read model stands: its position in the log and its status, the one place
they are read (health, admin, metrics, read-your-writes waits) and named (the engine writes
them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

Status = Literal["live", "catching_up", "rebuilding"]


class Standing(NamedTuple):
    name: str
    position: int
    status: Status


class Tracking:
    """The tracking keys of a deployment's read models, and reads of them."""

    def __init__(self, prefix: str, names: Sequence[str] = ()) -> None:
        self.prefix = prefix
        self.names = list(names)

    def position(self, name: str) -> str:
        return f"{self.prefix}proj:{name}:position"

    def status(self, name: str) -> str:
        return f"{self.prefix}proj:{name}:status"

    def lease(self, name: str) -> str:
        return f"{self.prefix}proj:{name}:lease"

    def _keys(self, names: Sequence[str]) -> list[str]:
        return [key for n in names for key in (self.position(n), self.status(n))]

    def _standings(self, names: Sequence[str], values: Sequence[Any]) -> list[Standing]:
        return [
            Standing(name, int(values[2 * i] or 0), _status(values[2 * i + 1]))
            for i, name in enumerate(names)
        ]

    def read_sync(self, client: Any, names: Sequence[str] | None = None) -> list[Standing]:
        names = self.names if names is None else names
        return self._standings(names, client.mget(self._keys(names)))

    async def read(self, redis: Any, names: Sequence[str] | None = None) -> list[Standing]:
        names = self.names if names is None else names
        return self._standings(names, await redis.mget(self._keys(names)))

    async def reached(
        self, redis: Any, position: int, *, seconds: float, names: Sequence[str] | None = None
    ) -> bool:
        """Wait until every read model (or those named) has processed `position`; False if
        they have not within `seconds`."""
        keys = [self.position(n) for n in (self.names if names is None else names)]
        deadline = time.monotonic() + seconds
        delay = 0.001
        while True:
            values = await redis.mget(keys)
            if all(int(v or 0) >= position for v in values):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)


def _status(raw: bytes | None) -> Status:
    # No status yet: the read model has not been built.
    value = (raw or b"rebuilding").decode()
    return value if value in ("live", "catching_up") else "rebuilding"  # type: ignore[return-value]
