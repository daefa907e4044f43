"""API key commands. A command carries a key's SHA-256, never the key."""

from __future__ import annotations

from nome_core.bus import Command


class CreateKey(Command, frozen=True, kw_only=True):
    key_id: str
    name: str
    roles: list[str]
    key_sha256: str
    hint: str
    # A fixed id that several processes may try to make at once (the bootstrap key): the
    # stream is read first and the key made only if it does not exist.
    ensure: bool = False


class RevokeKey(Command, frozen=True, kw_only=True):
    key_id: str


KeyCommand = CreateKey | RevokeKey
