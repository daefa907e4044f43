"""What each role grants (API.md §0): every tenant role includes viewer; admin includes every
tenant role; `platform` is apart from them all."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from nome_core.values import PLATFORM_ROLE, ROLES

_IMPLIED: Final[dict[str, frozenset[str]]] = {
    "viewer": frozenset({"viewer"}),
    "member": frozenset({"viewer", "member"}),
    "operator": frozenset({"viewer", "operator"}),
    "auditor": frozenset({"viewer", "auditor"}),
    "admin": frozenset(ROLES),
    # The deployment's operator: its own routes only, nothing of a tenant's.
    PLATFORM_ROLE: frozenset({PLATFORM_ROLE}),
}


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= _IMPLIED.get(role, frozenset())
    return frozenset(granted)
