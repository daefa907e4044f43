"""Streams are readers of the log. Live, resumed and replayed bytes all come from `frame()`
over stored rows, so a replay equals the live stream by construction.

One tail per run and process reads new rows once per wake-up and fans them out, so 200
clients watching one run cost one query per commit, not 200. Wake-ups come from this
process's writer, from Postgres NOTIFY for other processes' writes, and from a short poll
that also catches anything a notification missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from nome_core.runs.events import TERMINAL_TYPES
from nome_core.storage.rows import Row, decode_sealed, envelope_json, tenant_of
from nome_core.storage.store import EventStore

KEEPALIVE = b": keepalive\n\n"


def frame(row: Row, *, by_position: bool = False) -> bytes:
    """One SSE frame: id (the seq; the position on the workspace stream), event type, and
    the envelope on one line."""
    stored = decode_sealed(row.state)
    return b"".join(
        (
            b"id: ",
            str(row.position if by_position else stored.seq).encode(),
            b"\nevent: ",
            stored.type.encode(),
            b"\ndata: ",
            envelope_json(stored, row.position),
            b"\n\n",
        )
    )


def frame_type(frame: bytes) -> str:
    """The event type of a frame made by `frame` (its second line); "" for a keepalive."""
    lines = frame.split(b"\n", 2)
    if len(lines) < 2 or not lines[1].startswith(b"event: "):
        return ""
    return lines[1][len(b"event: ") :].decode()


class LogSignal:
    """Wakes every waiter in this process when the log may have moved (thread-safe poke).

    `generation` counts the pokes: a reader notes it before it reads the log and passes it
    to `wait`, which then returns at once if the log moved while it was reading. Without
    it, a poke that lands during the read wakes no one, and the reader sleeps until its
    poll (measured: the last events of a fast run reached 200 subscribers ~100 ms late).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self.generation = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def poke(self, *_: object) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seconds: float, seen: int) -> None:
        """Until a poke after generation `seen`, or `seconds`."""
        if self.generation != seen:
            return
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()


class RunTail:
    """The frames of one run read so far, shared by everyone streaming it here."""

    def __init__(self, store: EventStore, run_id: str, signal: LogSignal, poll: float) -> None:
        self.store = store
        self.run_id = run_id
        self.signal = signal
        self.poll = poll
        self.frames: list[bytes] = []
        self.types: list[str] = []
        self.users = 0
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return bool(self.types) and self.types[-1] in TERMINAL_TYPES

    def start(self, seen: int) -> None:
        """Follow the log from generation `seen`, the one noted before the first refresh."""
        self._task = asyncio.create_task(self._follow(seen))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        rows = await asyncio.to_thread(self.store.stream_rows, self.run_id, after=len(self.frames))
        if rows:
            self.frames.extend(frame(row) for row in rows)
            self.types.extend(row.type for row in rows)
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def wake(self) -> None:
        """Wake its subscribers from any thread (they look at the hub's state again)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            self._loop.call_soon_threadsafe(lambda: self._changed.set())

    async def changed(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    async def _follow(self, seen: int) -> None:
        while not self.ended:
            await self.signal.wait(self.poll, seen)
            seen = self.signal.generation
            with contextlib.suppress(Exception):  # a failed read is retried at the next wake
                await self.refresh()


class StreamHub:
    """Hands out run streams and the tenant workspace stream."""

    def __init__(
        self, store: EventStore, signal: LogSignal, *, heartbeat: float, poll: float = 0.25
    ) -> None:
        self.store = store
        self.signal = signal
        self.heartbeat = heartbeat
        self.poll = poll
        self._tails: dict[str, RunTail] = {}
        self.subscribers = 0
        # The process is stopping: every open stream ends now rather than hold shutdown.
        self.closing = False

    def close(self) -> None:
        """End every stream (thread-safe: a signal handler may call it)."""
        self.closing = True
        self.signal.poke()
        for tail in list(self._tails.values()):
            tail.wake()

    async def run_frames(self, run_id: str, after: int = 0) -> AsyncIterator[bytes]:
        """Frames of a run after seq `after`, one by one, live until its terminal event."""
        async for frames in self._run_batches(run_id, after):
            for one in frames:
                yield one

    async def run_stream(self, run_id: str, after: int = 0) -> AsyncIterator[bytes]:
        """The SSE body of a run after seq `after`: the frames that piled up while this
        subscriber was being served go out as one write. With hundreds of subscribers on a
        fast run, a send per frame per subscriber is what the process spends its time on."""
        async for frames in self._run_batches(run_id, after):
            yield b"".join(frames)

    async def _run_batches(self, run_id: str, after: int) -> AsyncIterator[list[bytes]]:
        """The frames not yet sent, whenever there are any, live until the run's terminal
        event; a keepalive when there were none for `heartbeat` seconds."""
        tail = self._tails.get(run_id)
        if tail is None:
            tail = self._tails[run_id] = RunTail(self.store, run_id, self.signal, self.poll)
            seen = self.signal.generation
            await tail.refresh()
            tail.start(seen)
        tail.users += 1
        self.subscribers += 1
        try:
            index = after
            while True:
                if index < len(tail.frames):
                    frames = tail.frames[index:]
                    index += len(frames)
                    yield frames
                if tail.ended or self.closing:
                    return
                before = len(tail.frames)
                await tail.changed(self.heartbeat)
                if len(tail.frames) == before and not tail.ended and not self.closing:
                    yield [KEEPALIVE]
        finally:
            self.subscribers -= 1
            tail.users -= 1
            if tail.users == 0:
                tail.stop()
                if self._tails.get(run_id) is tail:
                    del self._tails[run_id]

    async def workspace_frames(
        self, tenant_id: str, after: int, *, keep: Callable[[Row], bool] | None = None
    ) -> AsyncIterator[bytes]:
        """Every event of one tenant after a position, live, `id:` = position."""
        position = after
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        self.subscribers += 1
        try:
            while not self.closing:
                seen = self.signal.generation
                rows = await asyncio.to_thread(self.store.read, position, 500)
                for row in rows:
                    position = row.position
                    if tenant_of(row.state) == tenant_id and (keep is None or keep(row)):
                        yield frame(row, by_position=True)
                if len(rows) == 500:
                    continue
                if rows:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= self.heartbeat:
                    quiet_since = loop.time()
                    yield KEEPALIVE
                await self.signal.wait(min(self.poll, self.heartbeat), seen)
        finally:
            self.subscribers -= 1
