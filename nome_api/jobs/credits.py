"""Credits past their grant's `expires_at` leave the balance (`credits.expired`), made by
this job: the expiry is an event of the ledger like every other change of a balance."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from nome_core.accounts.commands import ExpireCredits as Expire
from nome_core.application import Actor, Application
from nome_core.events import Meta
from projections.accounts import AccountQueries

log = structlog.get_logger("nome.credits")


class ExpireCredits:
    """Every 2 s (one sorted-set read), each tenant with a grant past its expiry has
    what is left of it expired (what runs still hold in reservations stays until they end)."""

    name = "expire-credits"
    interval_s = 2.0
    concurrency = 4

    def __init__(self, app: Application, accounts: AccountQueries) -> None:
        self.app = app
        self.accounts = accounts

    async def due(self) -> Sequence[str]:
        # One command per tenant expires all its due grants.
        return sorted({tenant for tenant, _ in await self.accounts.expiring(time.time())})

    async def handle(self, tenant_id: str) -> None:
        actor = Actor(tenant_id, Meta(principal="system:credits"))
        cmd = Expire(tenant_id=tenant_id, at=self.app.clock.now())
        outcome = await self.app.accounts.expire(actor, cmd)
        if outcome.events:
            expired = sum(getattr(e.data, "amount", 0) for e in outcome.events)
            log.info("credits_expired", tenant=tenant_id, amount=expired)
