"""Periodic jobs: each runs every `interval_s` (with jitter, so several workers do not wake
together), in one process at a time (a Redis lease per job), handling at most `concurrency`
of its due items at once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from nome_api.jobs.leases import Lease
from nome_api.tasks import Tasks

log = structlog.get_logger("nome.jobs")


class Job(Protocol):
    name: str
    interval_s: float
    concurrency: int

    async def due(self) -> Sequence[Any]:
        """The items to handle this tick."""
        ...

    async def handle(self, item: Any) -> None:
        """Handle one item; an exception is logged and the item comes up again next tick."""
        ...


class JobHost:
    def __init__(self, redis: Any, prefix: str, jobs: Sequence[Job], *, jitter: float = 0.2):
        self.redis = redis
        self.prefix = prefix
        self.jobs = list(jobs)
        self.jitter = jitter
        self.owner = f"jobs-{uuid.uuid4().hex[:12]}"
        self._tasks = Tasks()

    async def start(self) -> None:
        for job in self.jobs:
            self._tasks.spawn(self._loop(job), f"nome-job-{job.name}")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def tick(self, job: Job) -> int:
        """Handle the job's due items now (if this process holds its lease); how many."""
        items = await job.due()
        if not items:
            return 0
        limit = asyncio.Semaphore(job.concurrency)

        async def one(item: Any) -> None:
            async with limit:
                try:
                    await job.handle(item)
                except Exception:
                    log.exception("job_item_failed", job=job.name, item=str(item))

        await asyncio.gather(*(one(item) for item in items))
        return len(items)

    async def _loop(self, job: Job) -> None:
        # A lease outlives a few missed ticks, so a busy holder keeps it; a dead one's
        # lapses and another process takes the job over.
        lease = Lease(
            self.redis,
            f"{self.prefix}job:{job.name}:lease",
            self.owner,
            max(10.0, 3 * job.interval_s),
        )
        try:
            while True:
                try:
                    if await lease.hold():
                        await self.tick(job)
                except Exception:
                    log.exception("job_failed", job=job.name)
                spread = job.interval_s * self.jitter
                await asyncio.sleep(job.interval_s + random.uniform(-spread, spread))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(lease.release())
