"""API key events. Only the SHA-256 of a key is ever recorded, never the key."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("key.created")
class KeyCreated(DomainEvent, frozen=True, kw_only=True):
    name: str
    roles: list[str]
    key_sha256: str
    # The first characters of the key, so a person can tell their keys apart in a list.
    hint: str


@event_type("key.revoked")
class KeyRevoked(DomainEvent, frozen=True, kw_only=True):
    pass
