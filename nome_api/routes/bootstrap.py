"""What a client needs at start-up, in one call (API.md §1)."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Router, get

from nome_api import __version__
from nome_api.context import Req, caller_of, runtime_of
from nome_api.downloads import ClientStatus
from nome_api.errors import ApiError
from nome_api.openapi import errors
from nome_api.settings import revision
from nome_core.tenants.plans import Limits


class PrincipalInfo(msgspec.Struct, kw_only=True):
    key_id: str
    name: str
    roles: list[str]


class TenantInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    plan: str


class Credits(msgspec.Struct, kw_only=True):
    balance: int


class Server(msgspec.Struct, kw_only=True):
    version: str
    revision: str


class Bootstrap(msgspec.Struct, kw_only=True):
    principal: PrincipalInfo
    tenant: TenantInfo
    entitlements: list[str]
    credits: Credits
    limits: Limits
    features: dict[str, bool]
    server: Server
    client: ClientStatus


_REVISION = revision()


@get(
    "/v1/bootstrap",
    summary="Everything a client needs at start-up",
    tags=["bootstrap"],
    responses=errors(404),
)
async def bootstrap(request: Req) -> Bootstrap:
    runtime, caller = runtime_of(request), caller_of(request)
    queries = runtime.queries
    tenant, credits = await asyncio.gather(
        queries.tenants.state(caller.tenant_id), queries.accounts.credits(caller.tenant_id)
    )
    if tenant is None:
        raise ApiError(404, "no such tenant")
    return Bootstrap(
        principal=PrincipalInfo(key_id=caller.key_id, name=caller.name, roles=sorted(caller.roles)),
        tenant=TenantInfo(id=tenant.id, name=tenant.name, plan=tenant.plan),
        entitlements=tenant.entitlements,
        credits=Credits(balance=credits.balance),
        limits=tenant.limits,
        features={
            "threads": True,
            "sse": True,
            "idempotency": True,
            "oidc": runtime.settings.auth == "oidc",
        },
        server=Server(version=__version__, revision=_REVISION),
        client=runtime.downloads.status(caller.meta.client),
    )


router = Router(path="/", route_handlers=[bootstrap])
