"""Keys, client build identities and projection admin (API.md §1)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import Req, actor_of, caller_of, json_bytes, runtime_of
from nome_api.errors import ApiError
from nome_api.gateway import wait_for_position
from nome_api.idempotency import idempotent
from nome_api.pagination import DEFAULT_LIMIT, index_page
from nome_api.schemas import CreatedKey, CreateKey, PageOf
from projections.keys import KeyView

_encode = msgspec.json.Encoder().encode


@post("/keys", status_code=201, summary="Create an API key (shown once)", opt={"role": "admin"})
async def create_key(request: Req, data: JSONBody[CreateKey]) -> Response[CreatedKey]:
    caller = caller_of(request)
    if data.tenant_id is not None and data.tenant_id != caller.tenant_id:
        raise ApiError(404, "no such tenant")

    async def run() -> Response[Any]:
        outcome, raw = await runtime_of(request).app.create_key(
            actor_of(request), data.name, list(data.roles)
        )
        key = outcome.state
        assert key is not None and outcome.position is not None
        # Like a revocation, a new key takes effect before it is shown: usable at once. The
        # key exists either way, so a slow projector must not turn this answer into an error.
        with contextlib.suppress(ApiError):
            await wait_for_position(runtime_of(request), outcome.position)
        body = CreatedKey(
            id=key.id, name=key.name, roles=key.roles, key=raw, created_at=key.created_at
        )
        return json_bytes(_encode(body), status=201, position=outcome.position)

    return await idempotent(request, run)


@get("/keys", summary="List API keys (never the keys themselves)", opt={"role": "admin"})
async def list_keys(
    request: Req,
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[KeyView]]:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    keys = runtime.read_models.keys
    return json_bytes(
        await index_page(
            runtime.redis,
            keys.index(tenant),
            limit=limit,
            cursor=cursor,
            doc_key=lambda key_id: keys.doc(tenant, key_id),
        )
    )


@delete("/keys/{key_id:str}", summary="Revoke an API key", opt={"role": "admin"})
async def revoke_key(request: Req, key_id: FromPath[str]) -> Response[None]:
    runtime = runtime_of(request)
    try:
        outcome = await runtime.app.revoke_key(actor_of(request), key_id)
    except ValueError:  # not a UUID
        raise ApiError(404, "no such key") from None
    # Answer only once every API process would refuse the key: revocation is immediate.
    assert outcome.position is not None and outcome.state is not None
    await wait_for_position(runtime, outcome.position)
    await runtime.admission.revoked(outcome.state.key_sha256)
    return Response(None, status_code=204, headers={"X-Nome-Position": str(outcome.position)})


class ClientSeen(msgspec.Struct, kw_only=True):
    surface: str | None
    version: str | None
    revision: str | None
    requests: int
    last_seen_at: str | None


@get("/clients", summary="Client build identities seen", opt={"role": "admin"})
async def list_clients(request: Req) -> list[ClientSeen]:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    base = f"{runtime.settings.redis_prefix}clients:{tenant}"
    await runtime.admission.meter.flush()  # include this process's requests so far
    counts = await runtime.redis.hgetall(f"{base}:requests")
    seen = await runtime.redis.hgetall(f"{base}:seen")
    clients = []
    for field, count in counts.items():
        surface, version, revision = field.decode().split("\x1f")
        last = seen.get(field)
        clients.append(
            ClientSeen(
                surface=surface or None,
                version=version or None,
                revision=revision or None,
                requests=int(count),
                last_seen_at=last.decode() if last else None,
            )
        )
    return sorted(clients, key=lambda c: c.last_seen_at or "", reverse=True)


class ProjectionStatus(msgspec.Struct, kw_only=True):
    name: str
    position: int
    head: int
    lag_events: int
    status: str


async def projection_statuses(request: Req) -> list[ProjectionStatus]:
    runtime = runtime_of(request)
    head = await asyncio.to_thread(runtime.store.head)
    names = [p.name for p in runtime.read_models.all]
    tracking = runtime.runner.tracking
    pipe = runtime.redis.pipeline(transaction=False)
    for name in names:
        pipe.get(tracking.position(name))
        pipe.get(tracking.status(name))
    values = await pipe.execute()
    out = []
    for i, name in enumerate(names):
        position = int(values[2 * i] or 0)
        status = (values[2 * i + 1] or b"rebuilding").decode()
        out.append(
            ProjectionStatus(
                name=name,
                position=position,
                head=head,
                lag_events=max(0, head - position),
                status=status,
            )
        )
    return out


@get("/projections", summary="Read model positions and lag", opt={"role": "operator"})
async def list_projections(request: Req) -> list[ProjectionStatus]:
    return await projection_statuses(request)


@post(
    "/projections/{name:str}/rebuild",
    status_code=202,
    summary="Rebuild a read model from the log",
    opt={"role": "operator"},
)
async def rebuild_projection(request: Req, name: FromPath[str]) -> ProjectionStatus:
    runtime = runtime_of(request)
    if runtime.read_models.named(name) is None:
        raise ApiError(404, "no such projection")
    await asyncio.to_thread(runtime.runner.request_rebuild, name)
    statuses = await projection_statuses(request)
    return next(s for s in statuses if s.name == name)


router = Router(
    path="/v1/admin",
    route_handlers=[
        create_key,
        list_keys,
        revoke_key,
        list_clients,
        list_projections,
        rebuild_projection,
    ],
    tags=["admin"],
)
