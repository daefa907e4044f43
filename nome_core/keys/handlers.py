"""Key use cases: a new key is made here and shown once; only its hash is recorded."""

from __future__ import annotations

from nome_core.bus import Actor, Claim, CommandBus, Handlers, Outcome
from nome_core.keys import secrets
from nome_core.keys.commands import CreateKey, KeyCommand
from nome_core.keys.decide import KEYS
from nome_core.keys.state import KeyState
from nome_core.values import PLATFORM_ROLE, PLATFORM_TENANT_ID


class KeyHandlers(Handlers[KeyState, KeyCommand]):
    def __init__(self, bus: CommandBus) -> None:
        super().__init__(bus, KEYS)

    async def create(
        self,
        actor: Actor,
        name: str,
        roles: list[str],
        *,
        raw_key: str | None = None,
        key_id: str | None = None,
        claim: Claim | None = None,
    ) -> tuple[Outcome[KeyState | None], str]:
        """A new key of the actor's tenant, with the raw key (shown once). With a fixed
        `key_id` and `raw_key` (start-up bootstrap from many processes), made at most once."""
        key = raw_key or secrets.generate()
        cmd = CreateKey(
            key_id=key_id or self.bus.clock.new_id(),
            name=name,
            roles=roles,
            key_sha256=secrets.digest(key),
            hint=secrets.hint(key),
            ensure=key_id is not None,
        )
        return await self.handle(actor, cmd, claim=claim), key

    async def create_platform(
        self, name: str, *, raw_key: str | None = None, key_id: str | None = None
    ) -> tuple[Outcome[KeyState | None], str]:
        """A key of the deployment's operator (role `platform`, in no customer tenant);
        with a fixed `key_id`, made at most once (NOME_BOOTSTRAP_PLATFORM_KEY)."""
        return await self.create(
            Actor(PLATFORM_TENANT_ID), name, [PLATFORM_ROLE], raw_key=raw_key, key_id=key_id
        )
