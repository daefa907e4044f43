"""The app as the `api` fixture runs it in process, and the header a request needs."""

from __future__ import annotations

import asyncio

from nome_api.runtime import Runtime
from nome_core.application import Actor
from nome_core.tenants.state import tenant_id_for


class Api:
    """A running app with helpers to mint keys for tenants."""

    def __init__(self, client: object, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    async def key(self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",)) -> str:
        app = self.runtime.app
        tenant_id = tenant_id_for(tenant)
        if app.tenants.named(tenant) is None:
            await app.tenants.create(tenant)
        outcome, raw = await app.keys.create(
            Actor(tenant_id), f"{tenant}-{'-'.join(roles)}", list(roles)
        )
        assert outcome.position is not None
        await self.settle(outcome.position)
        return raw

    async def platform_key(self) -> str:
        """A key of the deployment's operator (role `platform`)."""
        outcome, raw = await self.runtime.app.keys.create_platform("test platform")
        assert outcome.position is not None
        await self.settle(outcome.position)
        return raw

    async def settle(self, position: int | None = None) -> None:
        """Wait until the read models have processed `position` (default: the head).

        Polls with the sync client: the app's asyncio Redis client belongs to the test
        client's event loop, not the test's.
        """
        runner = self.runtime.runner
        target = position if position is not None else self.runtime.store.head()
        names = [p.name for p in self.runtime.read_models.all]
        for _ in range(1000):
            if min(runner.positions(names).values()) >= target:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"read models did not reach {target}")


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}
