"""Liveness and readiness (API.md §1): event store reachable, read models caught up."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Response, get

from nome_api import __version__
from nome_api.context import Req, runtime_of


class Checks(msgspec.Struct, kw_only=True):
    event_store: str
    read_models: str
    projector_lag_events: int


class Health(msgspec.Struct, kw_only=True):
    status: str
    version: str
    checks: Checks


@get("/v1/health", summary="Health", opt={"public": True}, tags=["health"])
async def health(request: Req) -> Response[Health]:
    runtime = runtime_of(request)
    try:
        head = await asyncio.wait_for(asyncio.to_thread(runtime.store.head), timeout=3)
        store_ok = True
    except Exception:
        head, store_ok = 0, False
    tracking = runtime.runner.tracking
    names = [p.name for p in runtime.read_models.all]
    try:
        pipe = runtime.redis.pipeline(transaction=False)
        for name in names:
            pipe.get(tracking.position(name))
            pipe.get(tracking.status(name))
        values = await asyncio.wait_for(pipe.execute(), timeout=3)
        positions = [int(v or 0) for v in values[0::2]]
        statuses = [(v or b"").decode() for v in values[1::2]]
        lag = max((max(0, head - p) for p in positions), default=0)
        # Until every read model has caught up after a (re)build, answers may be incomplete.
        models = "ok" if all(s == "live" for s in statuses) or head == 0 else "rebuilding"
    except Exception:
        lag, models = head, "unreachable"
    healthy = store_ok and models == "ok"
    body = Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        checks=Checks(
            event_store="ok" if store_ok else "unreachable",
            read_models=models,
            projector_lag_events=lag,
        ),
    )
    return Response(
        body, status_code=200 if store_ok else 503, headers={} if store_ok else {"Retry-After": "5"}
    )
