"""The one place time and ids enter the domain, so tests and replays control both."""

from __future__ import annotations

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
    """Wall clock and random UUIDs."""

    def now(self) -> str:
        return format_time(datetime.now(UTC))

    def new_id(self) -> str:
        return str(uuid.uuid4())
