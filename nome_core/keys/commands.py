"""API key commands."""

from __future__ import annotations

from nome_core.commands import Actor, CommandBus, Outcome
from nome_core.keys import decide as keys_decide
from nome_core.keys import secrets as key_secrets
from nome_core.keys import state as keys_state


class KeyCommands(CommandBus):
    """API keys."""

    async def create_key(
        self,
        actor: Actor,
        name: str,
        roles: list[str],
        *,
        raw_key: str | None = None,
        key_id: str | None = None,
    ) -> tuple[Outcome[keys_state.KeyState | None], str]:
        """A new key of the actor's tenant; returns it with the raw key (shown once).

        With a `key_id`, the key is made at most once (start-up bootstrap from many processes).
        """
        key = raw_key or key_secrets.generate()
        events = keys_decide.create(name, roles, key_secrets.digest(key), key_secrets.hint(key))
        outcome = await self.execute(
            key_id or self.clock.new_id(),
            keys_state.evolve,
            lambda state: [] if state is not None else events,
            actor,
            new=key_id is None,
        )
        return outcome, key

    async def revoke_key(self, actor: Actor, key_id: str) -> Outcome[keys_state.KeyState | None]:
        return await self.execute(
            key_id,
            keys_state.evolve,
            lambda state: keys_decide.revoke(state, actor.tenant_id),
            actor,
        )
