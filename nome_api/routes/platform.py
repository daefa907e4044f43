"""The platform operator's routes (API.md §6): tenants, their plans, credit grants, billing
state, entitlements and limits. Only a `platform` key reaches them; a tenant's own admin
gets 403. Each change is an event of the tenant's own streams, so it shows in the tenant's
workspace stream and audit export, with the operator's key as its principal."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get, post, put
from litestar.params import FromPath, JSONBody

from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    caller_of,
    json_bytes,
    reached,
    runtime_of,
)
from nome_api.errors import ApiError, Issue
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import PageOf, Strict
from nome_core.accounts.commands import GrantCredits
from nome_core.accounts.events import CreditsGranted
from nome_core.accounts.state import evolve as account_evolve
from nome_core.bus import Actor, Claim, Claimed, Outcome
from nome_core.clock import format_time
from nome_core.tenants.commands import ChangeEntitlements, ChangePlan, SetBilling, SetLimits
from nome_core.tenants.plans import Entitlement, PlanName
from nome_core.tenants.state import BillingStatus, TenantState
from nome_core.values import PLATFORM_ROLE
from projections.tenants import TenantView, tenant_view

_encode = msgspec.json.Encoder().encode
Moment = Annotated[datetime, msgspec.Meta(tz=True)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
# Every route here: the platform operator's key only.
_PLATFORM = {"role": PLATFORM_ROLE}


class CreateTenantBody(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
    plan: PlanName = "free"


class PlanBody(Strict):
    plan: PlanName


class GrantBody(Strict):
    amount: Annotated[int, msgspec.Meta(gt=0, le=1_000_000_000_000)]
    kind: Annotated[str, msgspec.Meta(pattern="^(paid|promotional)$")]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    expires_at: Moment | None = None


class BillingBody(Strict):
    status: BillingStatus
    period_end: Moment | None = None


class EntitlementsBody(Strict):
    grant: Annotated[list[Entitlement], msgspec.Meta(max_length=16)] = []
    revoke: Annotated[list[Entitlement], msgspec.Meta(max_length=16)] = []


class LimitsBody(Strict):
    """A limit given overrides the plan's; null goes back to the plan's; absent: unchanged."""

    max_threads: Count | msgspec.UnsetType | None = msgspec.UNSET
    max_installs: Count | msgspec.UnsetType | None = msgspec.UNSET
    max_concurrent_runs: Count | msgspec.UnsetType | None = msgspec.UNSET


class GrantView(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    amount: int
    kind: str
    expires_at: str | None
    reason: str
    created_at: str


def _actor(request: Req, tenant_id: str) -> Actor:
    """The operator acting on a tenant: the tenant's events, the operator's key."""
    return Actor(checked_id(tenant_id, "tenant"), caller_of(request).meta)


async def _tenant_answer(
    request: Req, outcome: Outcome[TenantState | None], *, status: int = 200
) -> Response[Any]:
    if outcome.state is None:
        raise ApiError(404, "no such tenant")
    view = tenant_view(outcome.state, runtime_of(request).settings.billing_grace_days)
    return json_bytes(_encode(view), status=status, position=await reached(request, outcome))


@get("/tenants", summary="List tenants, oldest first", opt=_PLATFORM)
async def list_tenants(
    request: Req, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[TenantView]]:
    runtime = runtime_of(request)
    grace = runtime.settings.billing_grace_days
    return json_bytes(
        await runtime.queries.tenants.page(limit=limit, cursor=cursor, grace_days=grace)
    )


@post(
    "/tenants",
    status_code=201,
    summary="Create a tenant with its plan's starting credits",
    opt=_PLATFORM,
    responses=errors(409),
)
async def create_tenant(request: Req, data: JSONBody[CreateTenantBody]) -> Response[TenantView]:
    # No Idempotency-Key needed: a tenant's id derives from its name, so a retry of the same
    # creation is a 409 naming it, never a second tenant.
    runtime = runtime_of(request)
    meta = caller_of(request).meta
    outcome = await runtime.app.tenants.create(data.name, plan=data.plan, meta=meta)
    return await _tenant_answer(request, outcome, status=201)


@get("/tenants/{tenant_id:str}", summary="Get a tenant", opt=_PLATFORM, responses=errors(404))
async def get_tenant(request: Req, tenant_id: FromPath[str]) -> Response[TenantView]:
    runtime = runtime_of(request)
    view = await runtime.queries.tenants.tenant(
        checked_id(tenant_id, "tenant"), runtime.settings.billing_grace_days
    )
    if view is None:
        raise ApiError(404, "no such tenant")
    return json_bytes(_encode(view))


@put(
    "/tenants/{tenant_id:str}/plan",
    summary="Change a tenant's plan",
    opt=_PLATFORM,
    responses=errors(404),
)
async def change_plan(
    request: Req, tenant_id: FromPath[str], data: JSONBody[PlanBody]
) -> Response[TenantView]:
    actor = _actor(request, tenant_id)
    cmd = ChangePlan(tenant_id=actor.tenant_id, plan=data.plan)
    return await _tenant_answer(request, await runtime_of(request).app.tenants.handle(actor, cmd))


@put(
    "/tenants/{tenant_id:str}/billing",
    summary="Set a tenant's billing state",
    opt=_PLATFORM,
    responses=errors(404),
)
async def set_billing(
    request: Req, tenant_id: FromPath[str], data: JSONBody[BillingBody]
) -> Response[TenantView]:
    actor = _actor(request, tenant_id)
    period_end = format_time(data.period_end) if data.period_end else None
    cmd = SetBilling(tenant_id=actor.tenant_id, status=data.status, period_end=period_end)
    return await _tenant_answer(request, await runtime_of(request).app.tenants.handle(actor, cmd))


@put(
    "/tenants/{tenant_id:str}/entitlements",
    summary="Grant or revoke entitlements beyond the plan",
    opt=_PLATFORM,
    responses=errors(404),
)
async def change_entitlements(
    request: Req, tenant_id: FromPath[str], data: JSONBody[EntitlementsBody]
) -> Response[TenantView]:
    both = sorted(set(data.grant) & set(data.revoke))
    if both:
        issues = [Issue(path=["revoke"], message=f"also granted: {', '.join(both)}")]
        raise ApiError(422, "an entitlement cannot be granted and revoked at once", issues=issues)
    actor = _actor(request, tenant_id)
    cmd = ChangeEntitlements(
        tenant_id=actor.tenant_id, grant=list(data.grant), revoke=list(data.revoke)
    )
    return await _tenant_answer(request, await runtime_of(request).app.tenants.handle(actor, cmd))


@put(
    "/tenants/{tenant_id:str}/limits",
    summary="Override the plan's limits",
    opt=_PLATFORM,
    responses=errors(404),
)
async def set_limits(
    request: Req, tenant_id: FromPath[str], data: JSONBody[LimitsBody]
) -> Response[TenantView]:
    actor = _actor(request, tenant_id)
    changes = {
        name: value
        for name, value in msgspec.structs.asdict(data).items()
        if value is not msgspec.UNSET
    }
    cmd = SetLimits(tenant_id=actor.tenant_id, changes=changes)
    return await _tenant_answer(request, await runtime_of(request).app.tenants.handle(actor, cmd))


def _grant_view(tenant_id: str, granted: CreditsGranted, at: str) -> bytes:
    return _encode(
        GrantView(
            id=granted.grant_id,
            tenant_id=tenant_id,
            amount=granted.amount,
            kind=granted.kind,
            expires_at=granted.expires_at,
            reason=granted.reason,
            created_at=at,
        )
    )


@post(
    "/tenants/{tenant_id:str}/credits",
    status_code=201,
    summary="Grant credits to a tenant",
    opt={**_PLATFORM, **IDEMPOTENT},
    responses=errors(404),
)
async def grant_credits(
    request: Req, tenant_id: FromPath[str], data: JSONBody[GrantBody]
) -> Response[GrantView]:
    actor = _actor(request, tenant_id)
    runtime = runtime_of(request)
    now = runtime.clock.now()
    expires_at = format_time(data.expires_at) if data.expires_at else None
    if expires_at is not None and expires_at <= now:
        issues = [Issue(path=["expires_at"], message="must be in the future")]
        raise ApiError(422, "a grant must not have expired already", issues=issues)

    async def run(claim: Claim | None) -> Response[Any]:
        # Grants go to tenants that exist: the tenant's stream is the proof.
        if (
            await runtime.log.call(runtime.app.tenants.get, actor.tenant_id, actor.tenant_id)
            is None
        ):
            raise ApiError(404, "no such tenant")
        cmd = GrantCredits(
            tenant_id=actor.tenant_id,
            grant_id=runtime.app.new_id(),
            amount=data.amount,
            kind="paid" if data.kind == "paid" else "promotional",
            expires_at=expires_at,
            reason=data.reason,
        )
        outcome = await runtime.app.accounts.grant(actor, cmd, claim=claim)
        event = outcome.events[-1]
        assert isinstance(event.data, CreditsGranted)
        body = _grant_view(actor.tenant_id, event.data, event.at)
        return json_bytes(body, status=201, position=outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        _, event, position = await result_of(request, claimed, account_evolve)
        assert isinstance(event.data, CreditsGranted)
        body = _grant_view(actor.tenant_id, event.data, event.at)
        return json_bytes(body, status=201, position=position)

    return await idempotent(request, run, replay, tenant_id=actor.tenant_id)


router = Router(
    path="/v1/platform",
    route_handlers=[
        list_tenants,
        create_tenant,
        get_tenant,
        change_plan,
        set_billing,
        change_entitlements,
        set_limits,
        grant_credits,
    ],
    tags=["platform"],
)
