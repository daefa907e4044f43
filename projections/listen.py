"""Cross-process wake-ups: Postgres LISTEN on the channel the recorder NOTIFYs per insert.

The log stays the source of truth; a notification only says "look now". A lost one costs
at most the runner's poll interval, which is the watchdog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog

log = structlog.get_logger("nome.listen")


class LogListener:
    """A thread that calls every callback whenever anything is appended to the log."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = "postgresql://" + url.split("://", 1)[1]
        self.channel = channel
        self.callbacks: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[], object]) -> None:
        self.callbacks.append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nome-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(
                        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel))
                    )
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            for callback in self.callbacks:
                                callback()
            except psycopg.Error as exc:
                log.warning("listen_reconnect", error=str(exc))
                self._stop.wait(1.0)
