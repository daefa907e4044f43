"""Prometheus metrics at `/metrics`: HTTP traffic, the writer, projections, runs, streams.

HTTP requests are counted by the gateway (`observe`, once per request), labelled with the
route template (`/v1/runs/{run_id:str}`), never the raw path, so a label can't take one
value per id.
Everything else is read at scrape time by `RuntimeCollector`, so there is nothing to keep
in step and nothing to go stale. Each app has its own `CollectorRegistry`: many apps in
one process (the tests) never collide.

`/metrics` needs an admin key like every route (API.md §0 lists no exception), unless the
deployment says otherwise with `NOME_METRICS_PUBLIC=1` (a scraper on a private network).
A client's address is no proof: behind a proxy on the same host every request is local.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import structlog
from litestar import Response, get
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from nome_api.runtime import Runtime
from nome_core.runs.state import RUN_STATUSES

log = structlog.get_logger("nome.metrics")

PATH = "/metrics"
EXPOSITION_TYPE = "text/plain; version=0.0.4"
_GLOB = re.compile(r"([*?\[\]\\])")


class Metrics:
    """One app's registry, its HTTP middleware and its `/metrics` route."""

    def __init__(self, runtime: Runtime, *, discovery_interval_s: float = 30.0) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nome_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.latency = Histogram(
            "nome_http_request_duration_seconds",
            "Seconds from request to the end of the response, by route template "
            "(streams count their whole life).",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(RuntimeCollector(runtime, discovery_interval_s))
        self.route = self._route()

    async def render(self) -> bytes:
        """The exposition text; the collector does blocking I/O, so off the event loop."""
        return await asyncio.to_thread(generate_latest, self.registry)

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count and time one request; `route` is its template, None if no route matched."""
        count, latency = self._series(method, route or "unmatched", status)
        count.inc()
        latency.observe(seconds)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The label children of one route and status (looking them up per request costs)."""
        key = (method, route, status)
        series = self._children.get(key)
        if series is None:
            series = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        return series

    def _route(self) -> Any:
        @get(
            PATH,
            summary="Prometheus metrics (admin key, unless NOME_METRICS_PUBLIC=1)",
            opt={"role": "admin", "public": self.runtime.settings.metrics_public},
            include_in_schema=False,
        )
        async def metrics() -> Response[bytes]:
            # Litestar adds the charset to a text type itself: name it once.
            return Response(await self.render(), media_type=EXPOSITION_TYPE)

        return metrics


class RuntimeCollector:
    """Reads the process's state at scrape time (runs in a worker thread, hence sync I/O).

    Runs by status are summed over tenants from the runs projection's per-tenant status
    indexes (`...v:runs:status:<tenant>:<status>`). Finding those keys needs a SCAN of the
    keyspace, so the key list is rediscovered at most every `discovery_interval_s`; each
    scrape is then one pipelined round trip of ZCARDs, O(tenants), whatever the number of
    runs or keys. A new tenant's runs show up within that interval. Pending approvals come
    from the approvals projection's expiry schedule, one ZCARD across all tenants.
    """

    def __init__(self, runtime: Runtime, discovery_interval_s: float) -> None:
        self.runtime = runtime
        self.discovery_interval_s = discovery_interval_s
        self._status_keys: list[tuple[str, str]] = []
        self._discovered_at: float | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Every runtime metric, read now."""
        yield from self._writer()
        yield from self._projections()
        yield GaugeMetricFamily(
            "nome_sse_subscribers",
            "Open SSE streams in this process.",
            value=self.runtime.hub.subscribers,
        )

    def _writer(self) -> Iterator[Metric]:
        writer = self.runtime.writer
        yield CounterMetricFamily(
            "nome_commands_appended",
            "Commands whose events this process's writer committed.",
            value=writer.commands,
        )
        yield CounterMetricFamily(
            "nome_commit_batches",
            "Group-commit transactions; commands / batches is the mean batch size.",
            value=writer.batches,
        )
        yield GaugeMetricFamily(
            "nome_commit_batch_size",
            "Commands in the writer's last group-commit transaction.",
            value=writer.last_batch_size,
        )
        yield CounterMetricFamily(
            "nome_events_appended", "Events this process's writer committed.", value=writer.events
        )

    def _projections(self) -> Iterator[Metric]:
        runtime = self.runtime
        up = GaugeMetricFamily(
            "nome_metrics_source_up", "Whether a scrape could read a source.", labels=["source"]
        )
        try:
            head: int | None = runtime.store.head()
            up.add_metric(["event_store"], 1)
            yield GaugeMetricFamily(
                "nome_log_head_position", "Global position of the log's last event.", value=head
            )
        except Exception:
            log.warning("metrics_event_store_unreachable", exc_info=True)
            head = None
            up.add_metric(["event_store"], 0)
        try:
            families = list(self._redis_families(head))
            up.add_metric(["redis"], 1)
        except Exception:
            log.warning("metrics_redis_unreachable", exc_info=True)
            families = []
            up.add_metric(["redis"], 0)
        yield up
        yield from families

    def _redis_families(self, head: int | None) -> Iterator[Metric]:
        runtime = self.runtime
        redis = runtime.redis_sync
        standings = runtime.read_models.tracking.read_sync(redis)
        status_keys = self._discover()
        pipe = redis.pipeline(transaction=False)
        for key, _status in status_keys:
            pipe.zcard(key)
        pipe.zcard(runtime.read_models.approvals.expiry())
        values = pipe.execute()

        position = GaugeMetricFamily(
            "nome_projection_position",
            "Last log position a read model applied.",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "nome_projection_lag_events",
            "Log head minus a read model's position.",
            labels=["projection"],
        )
        live = GaugeMetricFamily(
            "nome_projection_live",
            "1 when a read model is live, 0 while it rebuilds.",
            labels=["projection"],
        )
        for standing in standings:
            position.add_metric([standing.name], standing.position)
            if head is not None:
                lag.add_metric([standing.name], max(0, head - standing.position))
            live.add_metric([standing.name], 1 if standing.status == "live" else 0)
        yield position
        if head is not None:
            yield lag
        yield live

        counts = dict.fromkeys(RUN_STATUSES, 0)
        for (_key, status), count in zip(status_keys, values, strict=False):
            counts[status] = counts.get(status, 0) + int(count)
        runs = GaugeMetricFamily(
            "nome_runs", "Runs by status, over all tenants.", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            runs.add_metric([status], count)
        yield runs
        pending = int(values[-1])
        yield GaugeMetricFamily(
            "nome_approvals_pending", "Approvals waiting on a person, over all tenants.", pending
        )

    def _discover(self) -> list[tuple[str, str]]:
        """`(key, status)` of every tenant's run status index, rescanned now and then."""
        with self._lock:
            now = time.monotonic()
            if (
                self._discovered_at is None
                or now - self._discovered_at >= self.discovery_interval_s
            ):
                base = self.runtime.read_models.runs.key("status") + ":"
                pattern = _GLOB.sub(r"\\\1", base) + "*"
                found = []
                for raw in self.runtime.redis_sync.scan_iter(match=pattern, count=1000):
                    key = raw.decode() if isinstance(raw, bytes) else str(raw)
                    status = key.rsplit(":", 1)[1]
                    if status in RUN_STATUSES:
                        found.append((key, status))
                self._status_keys = sorted(found)
                self._discovered_at = now
            return self._status_keys
