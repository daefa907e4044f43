"""Account use cases: a tenant opened with its plan's starting credits, its plan and
limits changed (waiting runs take slots the change frees), credits granted by the platform
and expired by the job, and threads made within the tenant's `max_threads`."""

from __future__ import annotations

from typing import Any

from nome_core.accounts import decide
from nome_core.accounts.commands import ExpireCredits, GrantCredits
from nome_core.accounts.state import (
    AccountState,
    account_stream_id,
    evolve,
    evolve_quota,
    quota_stream_id,
)
from nome_core.bus import Actor, Claim, CommandBus, Handlers, Outcome, Spec
from nome_core.events import Decided, Meta, unrecorded
from nome_core.tenants import state as tenants
from nome_core.tenants.commands import ChangePlan, CreateTenant, SetLimits, TenantCommand
from nome_core.tenants.decide import TENANTS, live
from nome_core.tenants.state import TenantState, tenant_id_for
from nome_core.threads import state as threads
from nome_core.threads.commands import CreateThread, ThreadCommand
from nome_core.threads.decide import THREADS
from nome_core.threads.state import ThreadState


class TenantHandlers(Handlers[TenantState, TenantCommand]):
    """Tenants: made with their account (the plan's starting credits in the same commit);
    a change of plan or limits lets waiting runs take the slots it frees, in its commit."""

    def __init__(self, bus: CommandBus) -> None:
        super().__init__(bus, TENANTS)

    async def handle(
        self, actor: Actor, cmd: TenantCommand, *, claim: Claim | None = None
    ) -> Outcome[TenantState | None]:
        if not isinstance(cmd, ChangePlan | SetLimits):
            return await super().handle(actor, cmd, claim=claim)
        specs = [
            Spec(cmd.tenant_id, tenants.evolve),
            Spec(account_stream_id(cmd.tenant_id), evolve),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            tenant, account = states
            changed = [*TENANTS.decide(cmd, tenant)]
            for event in changed:
                tenant = tenants.evolve(tenant, unrecorded(event))
            return [changed, [*decide.schedule(account, tenant)] if changed else []]

        outcome, _ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        return outcome

    async def create(
        self, name: str, *, plan: str = "free", meta: Meta | None = None
    ) -> Outcome[TenantState | None]:
        tenant_id = tenant_id_for(name)
        cmd = CreateTenant(tenant_id=tenant_id, name=name, plan=plan)
        specs = [
            Spec(tenant_id, tenants.evolve),
            Spec(account_stream_id(tenant_id), evolve),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            opened = [*TENANTS.decide(cmd, states[0])]
            return [opened, [*decide.starting_grant(plan, grant_id=self.bus.clock.new_id())]]

        tenant, _ = await self.bus.execute_many(specs, decide_all, Actor(tenant_id, meta or Meta()))
        return tenant

    def named(self, name: str) -> TenantState | None:
        tenant_id = tenant_id_for(name)
        return self.get(tenant_id, tenant_id)


class AccountHandlers:
    def __init__(self, bus: CommandBus) -> None:
        self.bus = bus

    def get(self, tenant_id: str) -> AccountState | None:
        return self.bus.load(account_stream_id(tenant_id), evolve)

    async def grant(
        self, actor: Actor, cmd: GrantCredits, *, claim: Claim | None = None
    ) -> Outcome[AccountState | None]:
        """Credits from the platform operator (`actor`: the tenant, with the operator's
        key as the principal), to a tenant that exists."""
        specs = [
            # First: the grant is the command's result (an idempotency claim points at it).
            Spec(account_stream_id(cmd.tenant_id), evolve),
            Spec(cmd.tenant_id, tenants.evolve, read_only=True),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            live(states[1])
            granted = decide.grant(
                grant_id=cmd.grant_id,
                amount=cmd.amount,
                kind=cmd.kind,
                expires_at=cmd.expires_at,
                reason=cmd.reason,
            )
            return [[*granted], []]

        outcome, _ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        return outcome

    async def expire(self, actor: Actor, cmd: ExpireCredits) -> Outcome[AccountState | None]:
        """What is left of the tenant's grants past their expiry leaves its balance."""
        return await self.bus.execute(
            account_stream_id(cmd.tenant_id),
            evolve,
            lambda account: decide.expire(account, cmd.at),
            actor,
        )


class ThreadHandlers(Handlers[ThreadState, ThreadCommand]):
    """Threads; one is made only within the tenant's `max_threads`, counted on its quota
    stream in the same commit, so concurrent creations never pass the limit. (Deleting one
    stops its runs: RunHandlers.delete_thread.)"""

    def __init__(self, bus: CommandBus) -> None:
        super().__init__(bus, THREADS)

    async def handle(
        self, actor: Actor, cmd: ThreadCommand, *, claim: Claim | None = None
    ) -> Outcome[ThreadState | None]:
        if not isinstance(cmd, CreateThread):
            return await super().handle(actor, cmd, claim=claim)
        specs = [
            # First: the thread is the command's result (an idempotency claim points at it).
            Spec(cmd.thread_id, threads.evolve, thread_id=cmd.thread_id, new=True),
            Spec(actor.tenant_id, tenants.evolve, read_only=True),
            Spec(quota_stream_id(actor.tenant_id), evolve_quota),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            thread, tenant, quota = states
            created = [*THREADS.decide(cmd, thread)]
            return [created, [], [*decide.thread_quota(tenant, quota, cmd.thread_id)]]

        outcome, *_ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        return outcome
