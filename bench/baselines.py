"""Baselines measured on the same PostgreSQL in the same run: what the hardware and the
stock library give, so NOME's figures can be read as ratios."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.application import Application as StockApplication
from eventsourcing.domain import Aggregate
from psycopg import sql

from nome_core.eventstore import database_environment

# About the size of one stored NOME event row, so the raw INSERT writes a comparable tuple.
_ROW = b"x" * 600


class Rate(NamedTuple):
    ops: int
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def threaded(
    prepare: Callable[[], Callable[[], object]],
    *,
    threads: int,
    warmup: float,
    duration: float,
) -> Rate:
    """`threads` threads, each repeating the operation `prepare()` returned, as fast as it can.

    Only operations completed inside the window after the warm-up count.
    """
    counts = [0] * threads
    errors = [0] * threads
    stop = threading.Event()
    started = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            op = prepare()
        except BaseException as exc:
            failures.append(exc)
            started.abort()
            raise
        try:
            started.wait()
        except threading.BrokenBarrierError:
            return
        while not stop.is_set():
            try:
                op()
            except Exception:
                errors[i] += 1
                continue
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    try:
        try:
            started.wait(timeout=60)
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a load thread failed to start: {failures[:1]}") from None
        time.sleep(warmup)
        first, first_errors, t0 = sum(counts), sum(errors), time.perf_counter()
        time.sleep(duration)
        last, last_errors, t1 = sum(counts), sum(errors), time.perf_counter()
    finally:
        # Also on Ctrl-C: no thread may still hold a connection when the schema is dropped.
        stop.set()
        started.abort()
        for worker in workers:
            worker.join(timeout=30)
    return Rate(last - first, t1 - t0, last_errors - first_errors)


def raw_inserts(url: str, schema: str, *, clients: int, warmup: float, duration: float) -> Rate:
    """One-row INSERT transactions (autocommit) from `clients` connections."""
    table = sql.Identifier(schema, "bench_raw_inserts")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, state bytea NOT NULL)").format(
                table
            )
        )
    insert = sql.SQL("INSERT INTO {} (state) VALUES (%s)").format(table)
    connections: list[psycopg.Connection[Any]] = []

    def prepare() -> Callable[[], object]:
        conn = psycopg.connect(url, autocommit=True)
        connections.append(conn)
        return lambda: conn.execute(insert, (_ROW,))

    try:
        return threaded(prepare, threads=clients, warmup=warmup, duration=duration)
    finally:
        for conn in connections:
            conn.close()


class BenchStock(StockApplication[UUID]):
    """eventsourcing's own Application, saving one new aggregate per call (table
    `benchstock_events` in the bench schema)."""


class Dot(Aggregate):
    """The most trivial aggregate: its Created event is the only event."""


def stock_application(url: str, schema: str, *, pool: int) -> BenchStock:
    """The stock Application on the bench schema, as both stock baselines use it.

    Stock library settings (only the database's address and schema taken from NOME's), except
    a pool of `pool` connections and no overflow: with one connection per client no caller
    waits for a connection, so what limits the rate is the library's table lock, the point.
    """
    nome = database_environment(url, schema=schema)
    env = {k: v for k, v in nome.items() if k.startswith(("POSTGRES_", "PERSISTENCE_"))}
    env.pop("POSTGRES_LOCK_TIMEOUT", None)
    env.update(POSTGRES_POOL_SIZE=str(pool), POSTGRES_MAX_OVERFLOW="0")
    return BenchStock(env=env)


def stock_saves(url: str, schema: str, *, clients: int, warmup: float, duration: float) -> Rate:
    """eventsourcing's stock path in-process: `app.save(new aggregate)` from `clients` threads,
    no HTTP (a diagnostic; figure 1's baseline is the same save() per request over HTTP, see
    bench/bare.py)."""
    app = stock_application(url, schema, pool=clients)
    try:
        return threaded(
            lambda: lambda: app.save(Dot()),
            threads=clients,
            warmup=warmup,
            duration=duration,
        )
    finally:
        app.close()


def raw_select(url: str, schema: str, *, repeat: int = 3) -> Rate:
    """Reading every event row in log order, best of `repeat`: the floor under a rebuild."""
    query = sql.SQL("SELECT state FROM {} ORDER BY notification_id").format(
        sql.Identifier(schema, "nome_events")
    )
    best: Rate | None = None
    with psycopg.connect(url) as conn:
        for _ in range(repeat):
            t0 = time.perf_counter()
            # Binary: bytea as bytes, not hex text, the fastest read psycopg has.
            with conn.cursor() as cursor:
                cursor.execute(query, binary=True)
                rows = len(cursor.fetchall())
            seconds = time.perf_counter() - t0
            if best is None or seconds < best.seconds:
                best = Rate(rows, seconds, 0)
    assert best is not None
    return best
