"""Tenant decisions."""

from __future__ import annotations

from nome_core.bus import Aggregate
from nome_core.errors import Conflict
from nome_core.events import DomainEvent
from nome_core.tenants.commands import CreateTenant, TenantCommand
from nome_core.tenants.events import TenantCreated
from nome_core.tenants.state import TenantState, evolve


def decide(cmd: TenantCommand, state: TenantState | None) -> list[DomainEvent]:
    match cmd:
        case CreateTenant(name=name, plan=plan):
            if state is not None:
                raise Conflict(f"tenant {name!r} exists")
            return [TenantCreated(name=name, plan=plan)]


TENANTS: Aggregate[TenantState, TenantCommand] = Aggregate(
    evolve=evolve, decide=decide, stream_of=lambda cmd: cmd.tenant_id
)
