"""Tenant commands."""

from __future__ import annotations

from nome_core.commands import Actor, CommandBus, Outcome
from nome_core.eventstore import Meta
from nome_core.tenants import decide as tenants_decide
from nome_core.tenants import state as tenants_state


class TenantCommands(CommandBus):
    """Tenants (workspaces)."""

    async def create_tenant(
        self, name: str, actor_meta: Meta | None = None, *, plan: str = "free"
    ) -> Outcome[tenants_state.TenantState | None]:
        tenant_id = tenants_state.tenant_id_for(name)
        return await self.execute(
            tenant_id,
            tenants_state.evolve,
            lambda state: tenants_decide.create(state, name, plan),
            Actor(tenant_id, actor_meta or Meta()),
        )

    def tenant(self, tenant_id: str) -> tenants_state.TenantState | None:
        return self.load(tenant_id, tenants_state.evolve).state
