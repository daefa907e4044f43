"""What a client needs at start-up, in one call (API.md §1)."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Router, get

from nome_api import __version__
from nome_api.context import Req, caller_of, runtime_of
from nome_api.errors import ApiError
from nome_api.settings import revision
from nome_core.accounts.plans import plan_of
from nome_core.events import Client


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


class LimitsView(msgspec.Struct, kw_only=True):
    max_concurrent_runs: int
    max_installs: int
    max_threads: int


class Server(msgspec.Struct, kw_only=True):
    version: str
    revision: str


class Bootstrap(msgspec.Struct, kw_only=True):
    principal: PrincipalInfo
    tenant: TenantInfo
    entitlements: list[str]
    credits: Credits
    limits: LimitsView
    features: dict[str, bool]
    server: Server
    client: Client


_REVISION = revision()


@get("/v1/bootstrap", summary="Everything a client needs at start-up", tags=["bootstrap"])
async def bootstrap(request: Req) -> Bootstrap:
    runtime, caller = runtime_of(request), caller_of(request)
    queries = runtime.queries
    tenant, balance = await asyncio.gather(
        queries.tenants.tenant(caller.tenant_id), queries.accounts.balance(caller.tenant_id)
    )
    if tenant is None:
        raise ApiError(404, "no such tenant")
    plan = plan_of(tenant.plan)
    return Bootstrap(
        principal=PrincipalInfo(key_id=caller.key_id, name=caller.name, roles=sorted(caller.roles)),
        tenant=TenantInfo(id=tenant.id, name=tenant.name, plan=plan.name),
        entitlements=list(plan.entitlements),
        credits=Credits(balance=balance),
        limits=LimitsView(**msgspec.structs.asdict(plan.limits)),
        features={
            "threads": True,
            "sse": True,
            "idempotency": True,
            "oidc": runtime.settings.auth == "oidc",
        },
        server=Server(version=__version__, revision=_REVISION),
        client=caller.meta.client,
    )


router = Router(path="/", route_handlers=[bootstrap])
