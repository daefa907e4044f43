"""API key decisions."""

from __future__ import annotations

from nome_core.bus import Aggregate
from nome_core.errors import Invalid, NotFound
from nome_core.events import DomainEvent
from nome_core.keys.commands import CreateKey, KeyCommand, RevokeKey
from nome_core.keys.events import KeyCreated, KeyRevoked
from nome_core.keys.state import KeyState, evolve
from nome_core.values import PLATFORM_ROLE, ROLES


def decide(cmd: KeyCommand, state: KeyState | None) -> list[DomainEvent]:
    match cmd:
        case CreateKey() as c:
            if state is not None:
                return []  # an ensured key that exists already
            if c.roles == [PLATFORM_ROLE]:
                pass  # the platform key: alone, and only made in the platform's own stream
            elif not c.roles or set(c.roles) - set(ROLES):
                raise Invalid(f"roles must be a non-empty subset of {', '.join(ROLES)}")
            return [
                KeyCreated(
                    name=c.name, roles=sorted(set(c.roles)), key_sha256=c.key_sha256, hint=c.hint
                )
            ]
        case RevokeKey():
            if state is None or state.revoked_at is not None:
                raise NotFound("no such key")
            return [KeyRevoked()]


KEYS: Aggregate[KeyState, KeyCommand] = Aggregate(
    evolve=evolve,
    decide=decide,
    stream_of=lambda cmd: cmd.key_id,
    creates=lambda cmd: isinstance(cmd, CreateKey) and not cmd.ensure,
)
