"""API key state folded from its events."""

from __future__ import annotations

import msgspec

from nome_core.events import Event
from nome_core.keys.events import KeyCreated, KeyRevoked


class KeyState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    roles: list[str]
    key_sha256: str
    hint: str
    created_at: str
    revoked_at: str | None = None


def evolve(state: KeyState | None, event: Event) -> KeyState | None:
    match event.data:
        case KeyCreated() as created:
            return KeyState(
                id=event.stream_id,
                tenant_id=event.tenant_id,
                name=created.name,
                roles=created.roles,
                key_sha256=created.key_sha256,
                hint=created.hint,
                created_at=event.at,
            )
        case KeyRevoked() if state is not None:
            return msgspec.structs.replace(state, revoked_at=event.at)
    return state
