"""Account read model: what each tenant's runs have consumed, for its balance."""

from __future__ import annotations

from typing import Any

from nome_core.accounts.events import CreditsConsumed
from nome_core.accounts.plans import plan_of
from nome_core.events import Event
from projections.engine import Projection, View
from projections.tenants import TenantQueries


class AccountsProjection(Projection):
    name = "accounts"
    types = frozenset({CreditsConsumed.type})

    def credits(self, tenant_id: str) -> str:
        return self.key("credits", tenant_id)

    def apply(self, event: Event, view: View) -> None:
        match event.data:
            case CreditsConsumed(amount=amount):
                view.hincrby(self.credits(event.tenant_id), "consumed", amount)


class AccountQueries:
    def __init__(self, views: AccountsProjection, redis: Any, tenants: TenantQueries) -> None:
        self.views = views
        self.redis = redis
        self.tenants = tenants

    async def balance(self, tenant_id: str) -> int:
        """The plan's credits less what the tenant's runs have consumed."""
        tenant = await self.tenants.tenant(tenant_id)
        consumed = await self.redis.hget(self.views.credits(tenant_id), "consumed")
        return plan_of(tenant.plan if tenant else "free").starting_credits - int(consumed or 0)
