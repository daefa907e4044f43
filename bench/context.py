"""What a figure module gets (`Bench`: the run's settings, servers and progress line) and what
it gives back (`Figure`s: plain data, printed by bench/__main__.py)."""

from __future__ import annotations

import argparse
import math
import re
import secrets
import time
import uuid
from typing import Any, NamedTuple

import psycopg
import redis
from psycopg import sql

from bench import internals
from bench.load import Window, percentile
from bench.servers import Servers


class Figure(NamedTuple):
    """One measured value and the baseline it is read against, measured in the same run."""

    name: str
    value: float
    unit: str  # "/s" or "ms"
    baseline_name: str
    baseline: float  # nan when the figure it comes from did not run
    target: str = ""  # "" (reported only), ">= 1,500/s", "< 50 ms"; of the ratio: ">= 3x"
    problem: str = ""  # why the measurement is incomplete (errors, lost frames): never met

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.nan

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        op, number = self.target.split(maxsplit=1)
        subject = self.ratio if number.endswith("x") else self.value
        limit = float(re.sub(r"[^0-9.]", "", number))
        return not self.problem and (subject >= limit if op == ">=" else subject < limit)


def latencies(
    name: str,
    values: list[float],
    baseline_name: str,
    baseline: list[float],
    target: str = "",
    problem: str = "",
) -> list[Figure]:
    """A latency as two figures, p50 and p99 (which the target and problem are about), from
    seconds; `{q}` in the names stands for the percentile."""
    return [
        Figure(
            name.format(q=f"p{q}"),
            percentile(values, q) * 1000,
            "ms",
            baseline_name.format(q=f"p{q}"),
            percentile(baseline, q) * 1000,
            target if q == 99 else "",
            problem if q == 99 else "",
        )
        for q in (50, 99)
    ]


class Bench:
    """One run: its own Postgres schema and Redis key prefix (dropped at the end), its admin
    key, its servers, and the figures measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg_url, self.redis_url = args.database_url, args.redis_url
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.prefix = f"{self.schema}:"
        self.started = time.perf_counter()
        self.figures: list[Figure] = []
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        admin_key = "nome_sk_" + secrets.token_urlsafe(32)
        self.servers = Servers(
            nome_env={
                "NOME_DATABASE_URL": self.pg_url,
                "NOME_DATABASE_SCHEMA": self.schema,
                "NOME_REDIS_URL": self.redis_url,
                "NOME_REDIS_PREFIX": self.prefix,
                "NOME_BOOTSTRAP_ADMIN_KEY": admin_key,
                "NOME_SECRET_KEY": secrets.token_urlsafe(32),  # signs audit exports
                "NOME_LOG_LEVEL": "warning",
                "NOME_RATE_LIMIT": "100000000",
            },
            # The stock save() route gets one connection per client (bench/pg.py).
            stock_env={"NOME_BENCH_STOCK": f"{self.pg_url} {self.schema} {args.clients}"},
        )
        self.admin = self.servers.admin
        self.nome_env = self.servers.nome_env  # what bench/internals.py builds NOME from

    def phase(self, text: str) -> None:
        """A progress line, stamped with the seconds since the run started."""
        print(f"[{time.perf_counter() - self.started:6.1f}s] {text}", flush=True)

    def window(self) -> Window:
        """The measured window every closed-loop figure uses: --warmup, then --seconds."""
        return Window(self.args.warmup, self.args.seconds)

    def measured(self, name: str) -> float:
        """The value of a figure measured earlier in this run (a baseline shared by figures),
        nan if it did not run."""
        return next((f.value for f in self.figures if f.name == name), math.nan)

    def wait_projections(self, position: int, within: float = 60) -> float:
        """Until every read model has applied `position`; the seconds waited."""
        keys = list(internals.position_keys(self.nome_env).values())
        client = redis.Redis.from_url(self.redis_url)
        started = time.monotonic()
        try:
            while any(int(v or 0) < position for v in client.mget(keys)):
                if time.monotonic() - started > within:
                    raise RuntimeError(f"read models not at {position} after {within}s")
                time.sleep(0.005)
        finally:
            client.close()
        return time.monotonic() - started

    def cleanup(self) -> None:
        """Servers first (they write to the schema), then the schema, then the Redis keys."""
        try:
            self.servers.stop()
        finally:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                conn.execute(drop.format(sql.Identifier(self.schema)))
            client = redis.Redis.from_url(self.redis_url)
            keys: list[Any] = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.unlink(*keys[i : i + 500])
            client.close()
