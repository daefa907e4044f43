"""The one place time and ids enter the domain, so tests and replays control both."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Protocol


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, the only time format on the wire and in the log."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class Clock(Protocol):
    def now(self) -> str: ...

    def new_id(self) -> str: ...


class SystemClock:
    """Wall clock and random (version 4) UUIDs."""

    def __init__(self) -> None:
        self._random = _RandomBytes()

    def now(self) -> str:
        return format_time(datetime.now(UTC))

    def new_id(self) -> str:
        return str(uuid.UUID(bytes=self._random.take(16), version=4))


class _RandomBytes:
    """os.urandom read 4 KiB at a time: the same randomness as `uuid.uuid4()`, which asks the
    kernel for 16 bytes per id; that call took 38 us here (a VM's entropy device), a tenth of
    a thread creation's time, and every command makes ids for each of its events."""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        # A forked child must not hand out the bytes its parent will also use.
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._at + count > len(self._buffer):
                self._buffer, self._at = os.urandom(self._CHUNK), 0
            taken = self._buffer[self._at : self._at + count]
            self._at += count
            return taken
