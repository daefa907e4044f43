"""The caller's own account (API.md §6): plan, billing state, entitlements, limits,
credits, the ledger, usage and the client downloads."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Annotated

import msgspec
from litestar import Response, Router, get
from litestar.params import QueryParameter

from nome_api.context import DEFAULT_PAGE, Cursor, Limit, Req, caller_of, json_bytes, runtime_of
from nome_api.downloads import Release
from nome_api.errors import ApiError, Issue
from nome_api.schemas import PageOf
from nome_core.tenants.plans import Limits
from projections.accounts import Credits, Grouping, LedgerEntry, UsageReport
from projections.tenants import BillingView, TenantView

_encode = msgspec.json.Encoder().encode


class TenantInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    created_at: str


class Account(msgspec.Struct, kw_only=True):
    tenant: TenantInfo
    plan: str
    billing: BillingView
    entitlements: list[str]
    limits: Limits
    credits: Credits


class Billing(msgspec.Struct, kw_only=True):
    plan: str
    status: str
    period_end: str | None
    grace_until: str | None


async def _tenant(request: Req) -> TenantView:
    runtime = runtime_of(request)
    tenant = await runtime.queries.tenants.tenant(
        caller_of(request).tenant_id, runtime.settings.billing_grace_days
    )
    if tenant is None:
        raise ApiError(404, "no such tenant")
    return tenant


@get("/", summary="The caller's account: plan, billing, entitlements, limits, credits")
async def account(request: Req) -> Account:
    credits = runtime_of(request).queries.accounts.credits(caller_of(request).tenant_id)
    tenant, balance = await asyncio.gather(_tenant(request), credits)
    return Account(
        tenant=TenantInfo(id=tenant.id, name=tenant.name, created_at=tenant.created_at),
        plan=tenant.plan,
        billing=tenant.billing,
        entitlements=tenant.entitlements,
        limits=tenant.limits,
        credits=balance,
    )


@get("/ledger", summary="The credits ledger, newest first")
async def ledger(
    request: Req, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[LedgerEntry]]:
    accounts = runtime_of(request).queries.accounts
    page = await accounts.ledger(caller_of(request).tenant_id, limit=limit, cursor=cursor)
    return json_bytes(page)


DateParam = Annotated[
    str | None,
    QueryParameter(description="RFC 3339 date (or date-time: its date counts)", max_length=64),
]


def _day(name: str, value: str | None) -> date | None:
    if value is None or value == "":
        return None
    try:
        return (
            date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value).date()
        )
    except ValueError:
        issue = Issue(path=[name], message="expected an RFC 3339 date such as 2026-12-01")
        raise ApiError(400, f"{name} is not a date", issues=[issue]) from None


@get("/usage", summary="Usage by tier, day and agent")
async def usage(
    request: Req,
    start: DateParam = None,
    end: DateParam = None,
    group_by: Annotated[
        Grouping | None,
        QueryParameter(description="only this grouping (all three when absent)"),
    ] = None,
) -> UsageReport:
    first, last = _day("start", start), _day("end", end)
    if first is not None and last is not None and first > last:
        raise ApiError(400, "start is after end", issues=[Issue(path=["start"], message="> end")])
    accounts = runtime_of(request).queries.accounts
    return await accounts.usage(caller_of(request).tenant_id, first, last, group_by)


@get("/billing", summary="The caller's billing state")
async def billing(request: Req) -> Billing:
    tenant = await _tenant(request)
    return Billing(
        plan=tenant.plan,
        status=tenant.billing.status,
        period_end=tenant.billing.period_end,
        grace_until=tenant.billing.grace_until,
    )


Name = Annotated[str | None, QueryParameter(max_length=64)]


@get("/downloads", summary="Client builds to download, newest first")
async def downloads(
    request: Req, surface: Name = None, platform: Name = None
) -> Response[list[Release]]:
    releases = runtime_of(request).downloads.listed(surface or None, platform or None)
    return json_bytes(_encode(releases))


router = Router(
    path="/v1/account",
    route_handlers=[account, ledger, usage, billing, downloads],
    tags=["account"],
)
