"""The run worker: finds runnable runs, claims each with a lease, drives its harness.

A lease is a Redis key with a time to live that the worker keeps renewing while it drives
the run. If the worker dies the lease lapses and another worker claims the run and continues
from its log. Two workers can never both append a step: every append is checked against
the run's version, so a worker that lost its lease finds out at its next step and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid

import structlog

from nome_core.bus import Actor
from nome_core.events import Meta
from nome_core.runs.driver import RunDriver
from projections.runs import RunQueries

log = structlog.get_logger("nome.worker")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunWorker:
    """Drives runs until stopped; many workers may share one log and one Redis."""

    def __init__(
        self,
        driver: RunDriver,
        redis: object,
        runs: RunQueries,
        *,
        prefix: str,
        lease_s: float = 15.0,
        poll_s: float = 0.05,
        max_runs: int = 64,
    ) -> None:
        self.driver = driver
        self.redis = redis
        self.runs = runs
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s
        self.max_runs = max_runs
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._active: dict[str, asyncio.Task[None]] = {}
        # Runs whose tool backend was down under `offline: queue`: not before this time.
        self._not_before: dict[str, float] = {}
        self._offered: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def lease_key(self, run_id: str) -> str:
        return f"{self.prefix}lease:run:{run_id}"

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._renew = self.redis.register_script(_RENEW)  # type: ignore[attr-defined]
        self._release = self.redis.register_script(_RELEASE)  # type: ignore[attr-defined]
        self._loop_task = asyncio.create_task(self._loop(), name="nome-worker")
        log.info("worker_started", owner=self.owner)

    async def stop(self) -> None:
        if self._loop_task is not None:
            # A cancel that lands just as a wake-up fires can be swallowed (asyncio on 3.11
            # did so in wait_for): ask again until the loop has really stopped.
            while not self._loop_task.done():
                self._loop_task.cancel()
                await asyncio.wait([self._loop_task], timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._active.values()):
            task.cancel()
        await asyncio.gather(*self._active.values(), return_exceptions=True)

    def offer(self, tenant_id: str, run_id: str) -> None:
        """A run this process just admitted: claim it now rather than after its projection."""
        self._offered.add((tenant_id, run_id))
        self._wake.set()

    def wake(self, *_: object) -> None:
        """Thread-safe: the log moved, look for work now."""
        if self._event_loop is not None:
            with contextlib.suppress(RuntimeError):
                self._event_loop.call_soon_threadsafe(self._wake.set)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim_some()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker_poll_failed")
            # Woken at once by this process's projector; the short poll covers a projector
            # in another process (its runnable set is one cheap SMEMBERS).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()

    async def _claim_some(self) -> None:
        runnable = await self.runs.runnable()
        offered, self._offered = self._offered, set()
        candidates = list(set(runnable) | offered)
        random.shuffle(candidates)  # several workers should not all try the same run first
        for tenant_id, run_id in candidates:
            if len(self._active) >= self.max_runs:
                return
            if run_id in self._active or self._not_before.get(run_id, 0) > time.monotonic():
                continue
            claimed = await self.redis.set(  # type: ignore[attr-defined]
                self.lease_key(run_id), self.owner, nx=True, px=self.lease_ms
            )
            if claimed:
                task = asyncio.create_task(self._drive(tenant_id, run_id))
                self._active[run_id] = task

    async def _drive(self, tenant_id: str, run_id: str) -> None:
        renewer = asyncio.create_task(self._keep_lease(run_id, asyncio.current_task()))
        actor = Actor(tenant_id, Meta(principal=self.owner))
        try:
            advanced = await self.driver.advance(actor, run_id)
            if advanced.retry_after_s is not None:
                self._not_before[run_id] = time.monotonic() + advanced.retry_after_s
                log.info("run_postponed", run_id=run_id, retry_after_s=advanced.retry_after_s)
            else:
                self._not_before.pop(run_id, None)
            state = advanced.state
            if state is not None and state.terminal:
                log.info("run_ended", run_id=run_id, status=state.status, events=state.event_count)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run_drive_failed", run_id=run_id)
        finally:
            renewer.cancel()
            self._active.pop(run_id, None)
            with contextlib.suppress(Exception):
                await self._release(keys=[self.lease_key(run_id)], args=[self.owner])

    async def _keep_lease(self, run_id: str, driver: asyncio.Task[object] | None) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            renewed = await self._renew(
                keys=[self.lease_key(run_id)], args=[self.owner, self.lease_ms]
            )
            if not renewed and driver is not None:
                log.warning("run_lease_lost", run_id=run_id)
                driver.cancel()
                return
