"""A projector killed in the middle of catch-up resumes without losing or repeating an event.

A Postgres log of about 20,000 events is projected by a separate OS process, which is
SIGKILLed halfway; a second process takes over once the dead one's lease expires and runs to
the head. The result must equal a fresh rebuild of the same log into another key prefix.
Thread documents count their messages, so an event applied twice or skipped shows up.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from nome_api.settings import Settings
from nome_core.clock import format_time
from nome_core.events import DomainEvent, Event, Head, Meta, head_of, seal
from nome_core.keys.events import KeyCreated, KeyRevoked
from nome_core.storage.store import EventStore
from nome_core.tenants.events import TenantCreated
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadDeleted, ThreadRenamed
from projections.engine import ProjectionRunner, Tracking
from projections.registry import ReadModels
from tests.support.env import PG_URL, REDIS_URL
from tests.support.views import dump

HELPER = Path(__file__).parents[1] / "support" / "projector.py"
ROOT = HELPER.parents[2]
EVENTS = 20_000
# Generous bounds for a process to reach a state, so a broken projector fails instead of
# hanging the suite. Nothing is asserted about how long anything takes.
PATIENCE_S = 120


class SeededClock:
    """Reproducible ids and strictly increasing times."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._moment = datetime(2025, 3, 1, tzinfo=UTC)

    def now(self) -> str:
        self._moment += timedelta(milliseconds=1)
        return format_time(self._moment)

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))


def populate(store: EventStore, total: int = EVENTS, seed: int = 20_000) -> int:
    """Write a mixed, interleaved history of tenants, keys, threads and messages."""
    rng = random.Random(seed)
    clock = SeededClock(seed)
    heads: dict[str, Head] = {}
    pending: list[Event] = []
    written = 0

    def emit(stream: str, tenant: str, payload: DomainEvent, thread: str | None = None) -> None:
        sealed = seal(
            [payload],
            stream_id=stream,
            head=heads.get(stream, Head()),
            tenant_id=tenant,
            thread_id=thread,
            run_id=None,
            meta=Meta(),
            clock=clock,
        )
        heads[stream] = head_of(sealed)
        pending.extend(sealed)

    tenants = [tenant_id_for(name) for name in ("acme", "globex", "initech")]
    for name, tenant in zip(("acme", "globex", "initech"), tenants, strict=True):
        emit(tenant, tenant, TenantCreated(name=name, plan="pro"))
    threads: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    while written + len(pending) < total:
        roll = rng.random()
        if roll < 0.04 or not threads:
            thread, tenant = clock.new_id(), rng.choice(tenants)
            emit(thread, tenant, ThreadCreated(title=f"thread {len(threads)}", metadata={}), thread)
            threads.append((thread, tenant))
        elif roll < 0.06:
            thread, tenant = rng.choice(threads)
            emit(thread, tenant, ThreadRenamed(title=f"renamed {rng.random():.6f}"), thread)
        elif roll < 0.065:
            thread, tenant = threads.pop(rng.randrange(len(threads)))
            emit(thread, tenant, ThreadDeleted(), thread)
        elif roll < 0.075:
            key, tenant = clock.new_id(), rng.choice(tenants)
            sha = uuid.UUID(int=rng.getrandbits(128)).hex * 2
            emit(key, tenant, KeyCreated(name="k", roles=["member"], key_sha256=sha, hint="h"))
            keys.append((key, tenant))
        elif roll < 0.08 and keys:
            key, tenant = keys.pop(rng.randrange(len(keys)))
            emit(key, tenant, KeyRevoked())
        else:
            thread, tenant = rng.choice(threads)
            content = rng.choice(["hello", "Grüße", "日本語", "🚀"]) * rng.randint(1, 4)
            emit(
                thread,
                tenant,
                MessageAdded(message_id=clock.new_id(), role="user", content=content),
                thread,
            )
        if len(pending) >= 1000:
            written += len(store.insert(pending))
            pending.clear()
    if pending:
        written += len(store.insert(pending))
    return written


class Projector:
    """The helper script as a child process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        assert settings.database_schema is not None
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HELPER),
                "--database-url",
                PG_URL,
                "--schema",
                settings.database_schema,
                "--redis-url",
                REDIS_URL,
                "--prefix",
                settings.redis_prefix,
                "--page",
                "200",
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(PATIENCE_S)
        self._log.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(PATIENCE_S)
        self._log.close()
        return code

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(PATIENCE_S)
        if not self._log.closed:
            self._log.close()


def wait_for(condition: Callable[[], bool], what: str, projector: Projector, log: Path) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if projector.process.poll() is not None:
            raise AssertionError(f"the projector exited before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the projector did not reach {what}:\n{log.read_text()}")
        time.sleep(0.002)


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    store = EventStore(PG_URL, schema=settings.database_schema)
    yield store
    store.close()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.mark.slow
def test_a_projector_killed_mid_catch_up_resumes_to_the_same_views_as_a_fresh_rebuild(
    settings: Settings, store: EventStore, client: redis.Redis, tmp_path: Path
) -> None:
    written = populate(store)
    head = store.head()
    tracking = Tracking(settings.redis_prefix)
    names = [p.name for p in ReadModels(settings.redis_prefix).all]
    log = tmp_path / "projector.log"

    def positions() -> list[int]:
        return [int(v or 0) for v in client.mget([tracking.position(n) for n in names])]

    first = Projector(settings, log)
    try:
        wait_for(lambda: 0 < positions()[names.index("threads")] < head, "mid-way", first, log)
        first.kill()
    finally:
        first.ensure_dead()
    at_crash = positions()
    assert min(at_crash) < head, "the first projector finished before it was killed"

    second = Projector(settings, log)
    try:
        wait_for(lambda: min(positions()) >= head, "the head", second, log)
        assert second.stop() == 0
    finally:
        second.ensure_dead()

    fresh = settings.redis_prefix + "fresh:"
    ProjectionRunner(store, client, ReadModels(fresh).all, prefix=fresh, page=2000).catch_up()
    resumed, rebuilt = dump(client, settings.redis_prefix), dump(client, fresh)

    assert written == EVENTS
    assert positions() == [head] * len(names)
    assert len(rebuilt) > 1000
    assert resumed.keys() == rebuilt.keys()
    assert resumed == rebuilt
