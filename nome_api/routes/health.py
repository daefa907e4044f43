"""Liveness and readiness (API.md §1): event store reachable, read models caught up."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Response, Router, get
from litestar.openapi import ResponseSpec

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


@get(
    "/v1/health",
    summary="Health",
    opt={"public": True},
    tags=["health"],
    responses={
        503: ResponseSpec(
            Health, description="the event store is unreachable", generate_examples=False
        )
    },
)
async def health(request: Req) -> Response[Health]:
    runtime = runtime_of(request)
    try:
        head = await asyncio.wait_for(asyncio.to_thread(runtime.store.head), timeout=3)
        store_ok = True
    except Exception:
        head, store_ok = 0, False
    try:
        standings = await asyncio.wait_for(runtime.queries.tracking.read(runtime.redis), timeout=3)
        lag = max((max(0, head - s.position) for s in standings), default=0)
        # Until every read model has caught up after a (re)build, answers may be incomplete.
        live = all(s.status == "live" for s in standings)
        models = "ok" if live or head == 0 else "rebuilding"
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


router = Router(path="/", route_handlers=[health])
