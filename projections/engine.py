"""The projection engine: follow the global log, keep Redis read models, exactly once.

Every projection's changes for a batch of events go to Redis in one Lua script together with
their new positions, and the script applies them only if each stored position is still the
one the batch started from and this runner still holds each projection's lease. A redelivered or
concurrently applied batch therefore changes nothing. Positions advance over every event,
not only the types a projection folds, so "has position N been processed" is always
answerable.

A stored position of 0 means "start from scratch": the runner wipes the projection's keys
and rebuilds. That is how a rebuild is requested, and how an emptied Redis heals itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
import structlog

from nome_core.events import Event
from nome_core.storage.rows import to_event
from nome_core.storage.store import EventStore
from projections.tracking import Tracking

log = structlog.get_logger("nome.projections")

# KEYS: position, status, lease of each projection in the batch. ARGV: lease owner, the number
# of projections, then per projection: expected position, new position, status, length of its
# ops; then all ops, each as <argument count> <command> <arguments...>. Every check comes
# before the first write, because Redis does not undo a script that fails halfway.
_APPLY = """
local owner = ARGV[1]
local count = tonumber(ARGV[2])
for p = 1, count do
  local head = 2 + (p - 1) * 4
  local current = tonumber(redis.call('GET', KEYS[(p - 1) * 3 + 1]) or '0')
  if current ~= tonumber(ARGV[head + 1]) then return {0, p, current} end
  if redis.call('GET', KEYS[(p - 1) * 3 + 3]) ~= owner then return {-1, p, current} end
end
local i = 2 + count * 4 + 1
for p = 1, count do
  local head = 2 + (p - 1) * 4
  local stop = i + tonumber(ARGV[head + 4])
  while i < stop do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
  redis.call('SET', KEYS[(p - 1) * 3 + 1], ARGV[head + 2])
  redis.call('SET', KEYS[(p - 1) * 3 + 2], ARGV[head + 3])
end
return {1, 0, 0}
"""

# KEYS: lease. ARGV: owner, ttl ms. Take the lease if free, renew it if ours.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

Value = str | bytes | int | float


class View:
    """One projection's pending changes for a batch, readable before they are applied."""

    def __init__(self, client: redis.Redis, *, fresh: bool) -> None:
        self._client = client
        # After a wipe the projection's keys are known to be empty: no need to ask Redis.
        self._fresh = fresh
        self._strings: dict[str, bytes | None] = {}
        self.ops: list[Value] = []

    def get(self, key: str) -> bytes | None:
        if key not in self._strings:
            self._strings[key] = None if self._fresh else self._client.get(key)  # type: ignore[assignment]
        return self._strings[key]

    def set(self, key: str, value: bytes) -> None:
        self._strings[key] = value
        self._op("SET", key, value)

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._strings[key] = None
        self._op("DEL", *keys)

    def zadd(self, key: str, score: float, member: str) -> None:
        self._op("ZADD", key, score, member)

    def zrem(self, key: str, member: str) -> None:
        self._op("ZREM", key, member)

    def hset(self, key: str, field: str, value: bytes) -> None:
        self._op("HSET", key, field, value)

    def hdel(self, key: str, *fields: str) -> None:
        if fields:
            self._op("HDEL", key, *fields)

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._op("HINCRBY", key, field, amount)

    def lpush(self, key: str, value: bytes) -> None:
        self._op("LPUSH", key, value)

    def ltrim(self, key: str, start: int, stop: int) -> None:
        self._op("LTRIM", key, start, stop)

    def sadd(self, key: str, member: str) -> None:
        self._op("SADD", key, member)

    def srem(self, key: str, member: str) -> None:
        self._op("SREM", key, member)

    def _op(self, command: str, *args: Value) -> None:
        self.ops.append(len(args) + 1)
        self.ops.append(command)
        self.ops.extend(args)


class Projection(ABC):
    """A read model: which event types it folds and how each changes its keys."""

    name: str
    types: frozenset[str]

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}v:{self.name}:"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def wants(self, event: Event) -> bool:
        return event.type in self.types

    @abstractmethod
    def apply(self, event: Event, view: View) -> None:
        """Record the event's change in `view`; pure apart from view reads."""


class ProjectionRunner:
    """Catches projections up with the log in batches, then follows it live."""

    def __init__(
        self,
        store: EventStore,
        client: redis.Redis,
        projections: Sequence[Projection],
        *,
        prefix: str,
        page: int = 500,
        poll_interval: float = 0.25,
        lease_ms: int = 10_000,
    ) -> None:
        self.store = store
        self.client = client
        self.projections = list(projections)
        self.tracking = Tracking(prefix, [p.name for p in self.projections])
        self.page = page
        self.poll_interval = poll_interval
        self.lease_ms = lease_ms
        self.owner = uuid.uuid4().hex
        self._apply = client.register_script(_APPLY)
        self._lease = client.register_script(_LEASE)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied: list[tuple[Callable[[int], object], Callable[[Event], bool]]] = []
        self._renewed: dict[str, float] = {}
        self._marked: dict[str, int] = {}
        self.applied_events = 0

    def on_applied(
        self, listener: Callable[[int], object], when: Callable[[Event], bool] = lambda _: True
    ) -> None:
        """Call `listener(position)` after every applied batch holding an event `when`
        accepts (in-process wake-ups)."""
        self._applied.append((listener, when))

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="nome-projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for projection in self.projections:
            self._release(projection.name)

    def wake(self, _position: int | None = None) -> None:
        """Something was appended: look at the log now rather than at the next poll."""
        self._wake.set()

    def run(self) -> None:
        """Follow the log until stopped. The poll doubles as the watchdog for lost wake-ups."""
        log.info("projector_started", projections=[p.name for p in self.projections])
        while not self._stop.is_set():
            self._wake.clear()
            try:
                moved = self.step()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("projector_unavailable", error=str(exc))
                self._stop.wait(1.0)
                continue
            except Exception:
                log.exception("projector_failed")
                self._stop.wait(1.0)
                continue
            if not moved:
                self._wake.wait(self.poll_interval)

    # -- work ---------------------------------------------------------------------------

    def step(self) -> int:
        """Apply at most one page of events to every projection that is behind."""
        head = self.store.head()
        mine = self._holding()
        if not mine:
            return 0
        positions = self.positions([p.name for p in mine])
        for projection in mine:
            if positions[projection.name] == 0 and head > 0:
                self._wipe(projection)
        behind = [p for p in mine if positions[p.name] < head]
        if not behind:
            self._mark_live(mine, positions)
            return 0
        start = min(positions[p.name] for p in behind)
        rows = self.store.read(start, self.page, upto=head)
        if not rows:
            return 0
        events = [to_event(row.state, row.position) for row in rows]
        last = rows[-1].position
        batch = []
        for projection in behind:
            position = positions[projection.name]
            if last <= position:
                # The page starts behind a slower projection (one being rebuilt) and ends
                # before this one: committing would move its position back, and it would
                # apply the events in between a second time.
                continue
            pending = [e for e in events if e.position and e.position > position]
            batch.append((projection, position, pending))
        self._commit(batch, last, head)
        self.applied_events += len(events)
        return len(events)

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Apply everything up to the current head (CLI rebuilds, tests)."""
        while True:
            moved = self.step()
            if progress is not None:
                progress(
                    min(self.positions([p.name for p in self.projections]).values()),
                    self.store.head(),
                )
            if not moved and self.caught_up():
                return

    def caught_up(self) -> bool:
        head = self.store.head()
        return all(
            pos >= head for pos in self.positions([p.name for p in self.projections]).values()
        )

    def positions(self, names: Iterable[str]) -> dict[str, int]:
        return {s.name: s.position for s in self.tracking.read_sync(self.client, list(names))}

    def request_rebuild(self, name: str) -> None:
        """Forget a projection's position; whichever runner holds it rebuilds from scratch."""
        pipe = self.client.pipeline()
        pipe.delete(self.tracking.position(name))
        pipe.set(self.tracking.status(name), "rebuilding")
        pipe.execute()

    def _commit(
        self, batch: list[tuple[Projection, int, list[Event]]], last: int, head: int
    ) -> None:
        """Apply every projection's part of one page in one atomic script call."""
        if not batch:
            return
        keys: list[str] = []
        header: list[Value] = []
        ops: list[Value] = []
        status = "live" if last >= head else "catching_up"
        for projection, expected, events in batch:
            view = View(self.client, fresh=expected == 0)
            for event in events:
                if projection.wants(event):
                    projection.apply(event, view)
            name = projection.name
            keys += [
                self.tracking.position(name),
                self.tracking.status(name),
                self.tracking.lease(name),
            ]
            header += [expected, last, status, len(view.ops)]
            ops += view.ops
        outcome, index, stored = self._apply(
            keys=keys, args=[self.owner, len(batch), *header, *ops]
        )
        if outcome == 1:
            # Each projection's events are a suffix of the page: the longest holds them all.
            applied = max((events for _, _, events in batch), key=len)
            for listener, when in self._applied:
                if any(map(when, applied)):
                    listener(last)
        else:
            # Someone else moved a position (or took a lease): start over from theirs.
            self._renewed.clear()
            log.info(
                "projection_batch_rejected",
                projection=batch[index - 1][0].name,
                expected=batch[index - 1][1],
                stored=stored,
                lost_lease=outcome == -1,
            )

    def _mark_live(self, projections: list[Projection], positions: dict[str, int]) -> None:
        """Say `live` once per position reached, not on every idle poll."""
        due = [p for p in projections if self._marked.get(p.name) != positions[p.name]]
        if not due:
            return
        pipe = self.client.pipeline()
        for projection in due:
            pipe.set(self.tracking.status(projection.name), "live")
        pipe.execute()
        for projection in due:
            self._marked[projection.name] = positions[projection.name]

    def _wipe(self, projection: Projection) -> None:
        started = time.perf_counter()
        removed = 0
        for chunk in _chunks(self.client.scan_iter(match=projection.prefix + "*", count=1000), 500):
            removed += self.client.unlink(*chunk)
        self.client.set(self.tracking.status(projection.name), "rebuilding")
        log.info(
            "projection_wiped",
            projection=projection.name,
            keys=removed,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def _holding(self) -> list[Projection]:
        """The projections whose lease this runner holds, renewed a third into their term."""
        now = time.monotonic()
        due = [
            p
            for p in self.projections
            if now - self._renewed.get(p.name, float("-inf")) > self.lease_ms / 3000
        ]
        if due:
            pipe = self.client.pipeline(transaction=False)
            for projection in due:
                self._lease(
                    keys=[self.tracking.lease(projection.name)],
                    args=[self.owner, self.lease_ms],
                    client=pipe,
                )
            for projection, held in zip(due, pipe.execute(), strict=True):
                if held:
                    self._renewed[projection.name] = now
                else:
                    self._renewed.pop(projection.name, None)
        return [p for p in self.projections if p.name in self._renewed]

    def _release(self, name: str) -> None:
        key = self.tracking.lease(name)
        if self.client.get(key) == self.owner.encode():
            self.client.delete(key)


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
