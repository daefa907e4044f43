"""Keys, client build identities and projection admin (API.md §1)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.params import FromPath, JSONBody

from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    actor_of,
    caller_of,
    json_bytes,
    runtime_of,
)
from nome_api.errors import ApiError
from nome_api.gateway import wait_for_position
from nome_api.idempotency import idempotency_key_sha256, idempotent, result_of
from nome_api.ids import checked_id
from nome_api.keyring import keyring_for
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import PageOf, Strict
from nome_core.bus import Claim, Claimed
from nome_core.keys import secrets
from nome_core.keys.commands import RevokeKey
from nome_core.keys.state import KeyState, evolve
from nome_core.values import PLATFORM_ROLE, Role
from projections.keys import KeyView
from projections.tracking import Status


class CreateKeyBody(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=5)]
    tenant_id: str | None = None


class CreatedKey(msgspec.Struct, kw_only=True):
    """The one response that carries a raw key."""

    id: str
    name: str
    roles: list[str]
    key: str
    created_at: str


_encode = msgspec.json.Encoder().encode


@post(
    "/keys",
    status_code=201,
    summary="Create an API key (shown once)",
    opt={"role": "admin", **IDEMPOTENT},
    responses=errors(404),
)
async def create_key(request: Req, data: JSONBody[CreateKeyBody]) -> Response[CreatedKey]:
    caller = caller_of(request)
    if data.tenant_id is not None and data.tenant_id != caller.tenant_id:
        raise ApiError(404, "no such tenant")

    runtime = runtime_of(request)
    keyring = keyring_for(runtime.settings)

    async def run(claim: Claim | None) -> Response[Any]:
        raw = secrets.generate()
        if claim is not None:
            # The raw key is shown once and kept nowhere else: a retry of this request, even
            # after a crash, must show it again, so the claim keeps it sealed for 24 h.
            sealed = keyring.seal(raw.encode(), context=claim.key_sha256.encode())
            claim = claim._replace(sealed=sealed)
        outcome, _ = await runtime.app.keys.create(
            actor_of(request), data.name, list(data.roles), raw_key=raw, claim=claim
        )
        key = outcome.state
        assert key is not None and outcome.position is not None
        # Like a revocation, a new key takes effect before it is shown: usable at once. The
        # key exists either way, so a slow projector must not turn this answer into an error.
        with contextlib.suppress(ApiError):
            await wait_for_position(runtime, outcome.position)
        return _created(key, raw, outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        key, _, position = await result_of(request, claimed, evolve)
        assert claimed.sealed is not None
        raw = keyring.open(claimed.sealed, context=idempotency_key_sha256(request).encode())
        return _created(key, raw.decode(), position)

    return await idempotent(request, run, replay)


def _created(key: KeyState, raw: str, position: int) -> Response[bytes]:
    body = CreatedKey(id=key.id, name=key.name, roles=key.roles, key=raw, created_at=key.created_at)
    return json_bytes(_encode(body), status=201, position=position)


@get("/keys", summary="List API keys (never the keys themselves)", opt={"role": "admin"})
async def list_keys(
    request: Req, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[KeyView]]:
    keys = runtime_of(request).queries.keys
    return json_bytes(await keys.page(caller_of(request).tenant_id, limit=limit, cursor=cursor))


@delete(
    "/keys/{key_id:str}",
    summary="Revoke an API key",
    opt={"role": "admin"},
    responses=errors(409),
)
async def revoke_key(request: Req, key_id: FromPath[str]) -> Response[None]:
    runtime = runtime_of(request)
    outcome = await runtime.app.keys.handle(
        actor_of(request), RevokeKey(key_id=checked_id(key_id, "key"))
    )
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
    meter = runtime_of(request).admission.meter
    clients = [
        ClientSeen(
            surface=c.client.surface,
            version=c.client.version,
            revision=c.client.revision,
            requests=c.requests,
            last_seen_at=c.last_seen_at,
        )
        for c in await meter.clients(caller_of(request).tenant_id)
    ]
    return sorted(clients, key=lambda c: c.last_seen_at or "", reverse=True)


class ProjectionStatus(msgspec.Struct, kw_only=True):
    name: str
    position: int
    head: int
    lag_events: int
    status: Status


async def projection_statuses(request: Req) -> list[ProjectionStatus]:
    runtime = runtime_of(request)
    head = await runtime.log.head()
    return [
        ProjectionStatus(
            name=s.name,
            position=s.position,
            head=head,
            lag_events=max(0, head - s.position),
            status=s.status,
        )
        for s in await runtime.queries.tracking.read(runtime.redis)
    ]


@get("/projections", summary="Read model positions and lag", opt={"role": "operator"})
async def list_projections(request: Req) -> list[ProjectionStatus]:
    return await projection_statuses(request)


@post(
    "/projections/{name:str}/rebuild",
    status_code=202,
    summary="Rebuild a read model from the log (the platform operator's: read models are shared)",
    opt={"role": PLATFORM_ROLE},
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
