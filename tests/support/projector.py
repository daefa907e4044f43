"""A projector process for the crash test: follows one Postgres schema into one Redis prefix.

    python tests/support/projector.py --schema S --prefix P [--page 200]

Runs `ProjectionRunner.run` (on the runner's own thread) until SIGTERM, then stops cleanly and
releases its leases. SIGKILL is the crash the test is about.
"""

from __future__ import annotations

import argparse
import signal
import threading

import redis

from nome_core.storage.store import EventStore
from projections.engine import ProjectionRunner
from projections.registry import ReadModels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--page", type=int, default=200)
    # Short, so that a restarted projector takes over from a killed one without a long wait.
    parser.add_argument("--lease-ms", type=int, default=1000)
    args = parser.parse_args(argv)

    store = EventStore(args.database_url, schema=args.schema, create_table=False)
    client = redis.Redis.from_url(args.redis_url)
    runner = ProjectionRunner(
        store,
        client,
        ReadModels(args.prefix).all,
        prefix=args.prefix,
        page=args.page,
        poll_interval=0.05,
        lease_ms=args.lease_ms,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    runner.start()
    stopping.wait()
    runner.stop()
    client.close()
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
