"""Fakes shared by the tests (fakes over mocks)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from nome_core.clock import format_time


class StepClock:
    """Ids and times that advance one step per call, so every value is known in advance and
    a Hypothesis example replays exactly when it is shrunk."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._ticks = itertools.count(1)

    def now(self) -> str:
        return format_time(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._ticks)))

    def new_id(self) -> str:
        return str(uuid.UUID(int=next(self._ids)))
