"""Tenant use cases."""

from __future__ import annotations

from nome_core.bus import Actor, CommandBus, Handlers, Outcome
from nome_core.events import Meta
from nome_core.tenants.commands import CreateTenant, TenantCommand
from nome_core.tenants.decide import TENANTS
from nome_core.tenants.state import TenantState, tenant_id_for


class TenantHandlers(Handlers[TenantState, TenantCommand]):
    def __init__(self, bus: CommandBus) -> None:
        super().__init__(bus, TENANTS)

    async def create(
        self, name: str, *, plan: str = "free", meta: Meta | None = None
    ) -> Outcome[TenantState | None]:
        tenant_id = tenant_id_for(name)
        cmd = CreateTenant(tenant_id=tenant_id, name=name, plan=plan)
        return await self.handle(Actor(tenant_id, meta or Meta()), cmd)

    def named(self, name: str) -> TenantState | None:
        tenant_id = tenant_id_for(name)
        return self.get(tenant_id, tenant_id)
