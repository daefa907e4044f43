"""Marketplace use cases: imports (requested, each step recorded, published), and each
tenant's installs."""

from __future__ import annotations

import asyncio
from typing import Any

from nome_core.accounts import state as accounts
from nome_core.bus import Actor, Claim, CommandBus, Outcome, Spec, owned_by
from nome_core.events import Decided
from nome_core.marketplace import decide
from nome_core.marketplace.commands import (
    ImportStep,
    InstallPackage,
    PublishImport,
    RequestImport,
    UninstallPackage,
)
from nome_core.marketplace.errors import ImportNotFound, PackageNotFound
from nome_core.marketplace.state import (
    PUBLIC,
    ImportState,
    InstallState,
    PackageState,
    evolve_import,
    evolve_install,
    evolve_package,
    install_stream_id,
    package_stream_id,
)
from nome_core.tenants import state as tenants


class MarketplaceHandlers:
    def __init__(self, bus: CommandBus, billing_grace_days: float) -> None:
        self.bus = bus
        self.billing_grace_days = billing_grace_days

    async def request_import(
        self, actor: Actor, cmd: RequestImport, *, claim: Claim | None = None
    ) -> Outcome[ImportState]:
        specs = [
            Spec(cmd.import_id, evolve_import, new=True),
            Spec(actor.tenant_id, tenants.evolve, read_only=True),
        ]
        now = self.bus.clock.now()

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            made = decide.request(cmd, states[1], now=now, grace_days=self.billing_grace_days)
            return [[*made], []]

        made, _ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        return made

    async def record(self, actor: Actor, cmd: ImportStep) -> ImportState | None:
        outcome: Outcome[ImportState | None] = await self.bus.execute(
            cmd.import_id, evolve_import, lambda state: decide.step(cmd, state), actor
        )
        return outcome.state

    async def publish(self, actor: Actor, cmd: PublishImport) -> ImportState | None:
        """Appended to the import and its package in one commit: a crash between the two
        cannot leave a published version whose import says otherwise."""
        current = await asyncio.to_thread(self.get_import, actor.tenant_id, cmd.import_id)
        if current is None or current.manifest is None:
            return current
        package_id = package_stream_id(current.scope, current.manifest.name)
        specs = [Spec(cmd.import_id, evolve_import), Spec(package_id, evolve_package)]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            done, published = decide.publish(states[0], states[1])
            return [[*done], [*published]]

        outcome, _ = await self.bus.execute_many(specs, decide_all, actor)
        return outcome.state  # type: ignore[no-any-return]

    async def install(
        self, actor: Actor, cmd: InstallPackage, *, claim: Claim | None = None
    ) -> Outcome[InstallState]:
        """Install or upgrade, with its place under `max_installs`, in one commit: two
        installs racing for the last place cannot both have it."""
        tenant_id = actor.tenant_id
        package = await asyncio.to_thread(self.get_package, tenant_id, cmd.package)
        if package is None:
            raise PackageNotFound()
        specs = [
            Spec(install_stream_id(tenant_id, cmd.package), evolve_install),
            Spec(package.id, evolve_package, read_only=True),
            Spec(tenant_id, tenants.evolve, read_only=True),
            Spec(accounts.quota_stream_id(tenant_id), accounts.evolve_quota),
        ]
        now = self.bus.clock.now()

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            current, package, tenant, quota = states
            done, taken = decide.install(
                cmd, current, package, tenant, quota, now=now, grace_days=self.billing_grace_days
            )
            return [[*done], [], [], [*taken]]

        outcome, *_ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        return outcome

    async def uninstall(self, actor: Actor, cmd: UninstallPackage) -> Outcome[InstallState]:
        specs = [
            Spec(install_stream_id(actor.tenant_id, cmd.package), evolve_install),
            Spec(accounts.quota_stream_id(actor.tenant_id), accounts.evolve_quota),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            done, freed = decide.uninstall(states[0])
            return [[*done], [*freed]]

        outcome, _ = await self.bus.execute_many(specs, decide_all, actor)
        return outcome

    def get_install(self, tenant_id: str, package: str) -> InstallState | None:
        stream_id = install_stream_id(tenant_id, package)
        return owned_by(self.bus.load(stream_id, evolve_install), tenant_id)  # type: ignore[no-any-return]

    def get_import(self, tenant_id: str, import_id: str) -> ImportState | None:
        return owned_by(self.bus.load(import_id, evolve_import), tenant_id)  # type: ignore[no-any-return]

    def live_import(self, tenant_id: str, import_id: str) -> ImportState:
        found = self.get_import(tenant_id, import_id)
        if found is None:
            raise ImportNotFound()
        return found

    def get_package(self, tenant_id: str, name: str) -> PackageState | None:
        """The tenant's own package of that name, else the public one."""
        for scope in (tenant_id, PUBLIC):
            found = owned_by(
                self.bus.load(package_stream_id(scope, name), evolve_package), tenant_id
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
        return None
