"""API key commands."""

from __future__ import annotations

from nome_core.errors import Invalid, NotFound
from nome_core.eventstore import DomainEvent
from nome_core.keys.events import KeyCreated, KeyRevoked
from nome_core.keys.roles import ROLES
from nome_core.keys.state import KeyState


def create(name: str, roles: list[str], key_sha256: str, hint: str) -> list[DomainEvent]:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise Invalid(f"roles must be a non-empty subset of {', '.join(ROLES)}")
    return [KeyCreated(name=name, roles=sorted(set(roles)), key_sha256=key_sha256, hint=hint)]


def revoke(state: KeyState | None, tenant_id: str) -> list[DomainEvent]:
    if state is None or state.tenant_id != tenant_id or state.revoked_at is not None:
        raise NotFound("no such key")
    return [KeyRevoked()]
