"""Figure 4: a full rebuild of every read model, in-process, as `nome projections rebuild` does."""

from __future__ import annotations

import time

from bench.baselines import Rate
from nome_core.eventstore import EventStore
from projections.engine import ProjectionRunner
from projections.redis_store import connect
from projections.registry import ReadModels


def rebuild_all(url: str, schema: str, redis_url: str, prefix: str) -> Rate:
    """Forget every projection's position, then catch up from the start of the log.

    The same objects a Runtime builds (store, sync Redis client, read models, runner); no
    server may be running on this prefix, or its runner would hold the projections' leases.
    """
    store = EventStore(url, schema=schema, create_table=False)
    client = connect(redis_url)
    models = ReadModels(prefix)
    runner = ProjectionRunner(store, client, models.all, prefix=prefix)
    try:
        for projection in models.all:
            runner.request_rebuild(projection.name)
        started = time.perf_counter()
        runner.catch_up()
        seconds = time.perf_counter() - started
        return Rate(runner.applied_events, seconds, 0)
    finally:
        runner.stop()  # releases the leases; no thread was started
        client.close()
        store.close()
