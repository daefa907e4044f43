"""Idempotency claims are kept 24 hours (API.md §0); this job deletes the older ones, with
the raw keys some of them keep sealed for a retried key creation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from nome_core.storage.store import EventStore

log = structlog.get_logger("nome.claims")


class ForgetClaims:
    name = "forget-claims"
    interval_s = 600.0
    concurrency = 1

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def due(self) -> Sequence[str]:
        return ["claims"]

    async def handle(self, _: str) -> None:
        forgotten = await asyncio.to_thread(self.store.expire_claims)
        if forgotten:
            log.info("claims_forgotten", count=forgotten)
