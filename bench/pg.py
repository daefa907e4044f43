"""Baselines on the same PostgreSQL: raw psycopg INSERTs and SELECTs, and eventsourcing's stock
`Application.save()`. Self-contained on purpose: they measure what the hardware and the stock
library give, so they must not move when NOME's code does.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from psycopg import sql

from bench.load import Window, threads

# NOME's events table in the run's schema: eventsourcing's own columns, named after the
# application ("nome"). Part of the stored format, so as stable as the event topics.
EVENTS = "nome_events"
# About the size of one stored NOME event row, so the raw INSERT writes a comparable tuple.
ROW = b"x" * 600


def raw_inserts(url: str, schema: str, *, clients: int, window: Window) -> Window:
    """One-row INSERT transactions (autocommit) from `clients` connections."""
    table = sql.Identifier(schema, "bench_raw_inserts")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, state bytea)").format(table)
        )
    insert = sql.SQL("INSERT INTO {} (state) VALUES (%s)").format(table)
    connections: list[psycopg.Connection[Any]] = []

    def prepare() -> Any:
        conn = psycopg.connect(url, autocommit=True)
        connections.append(conn)
        return lambda: conn.execute(insert, (ROW,))

    try:
        return threads(prepare, clients=clients, window=window)
    finally:
        for conn in connections:
            conn.close()


class Stock(Application[UUID]):
    """eventsourcing's own Application (table `stock_events` in the bench schema)."""


class Dot(Aggregate):
    """The most trivial aggregate: its Created event is its only event."""


def stock_application(url: str, schema: str, *, pool: int) -> Stock:
    """The stock Application with stock settings, but for the database's address and a pool of
    one connection per client and no overflow: no caller waits for a connection, so what
    limits the rate is the library's table lock, the point of the baseline."""
    parts = urlsplit(url)
    return Stock(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": str(pool),
            "POSTGRES_MAX_OVERFLOW": "0",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
    )


def stock_saves(url: str, schema: str, *, clients: int, window: Window) -> Window:
    """`app.save(new aggregate)` from `clients` threads in-process, no HTTP."""
    app = stock_application(url, schema, pool=clients)
    try:
        return threads(lambda: lambda: app.save(Dot()), clients=clients, window=window)
    finally:
        app.close()


def select_rate(
    url: str,
    schema: str,
    where: str = "ORDER BY notification_id",
    params: tuple[Any, ...] = (),
    *,
    repeat: int = 3,
) -> float:
    """Rows/s of `SELECT state` of the events table `where` ..., the best of `repeat`: the
    floor under anything that reads the same rows."""
    query = sql.SQL(f"SELECT state FROM {{}} {where}").format(sql.Identifier(schema, EVENTS))
    best = 0.0
    with psycopg.connect(url) as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            # Binary: bytea as bytes, not hex text, the fastest read psycopg has.
            with conn.cursor() as cursor:
                cursor.execute(query, params, binary=True)
                rows = len(cursor.fetchall())
            best = max(best, rows / (time.perf_counter() - started))
    return best
