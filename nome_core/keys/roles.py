"""What each role grants (API.md §0): every role includes viewer; admin includes everything."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from nome_core.values import ROLES

_IMPLIED: Final[dict[str, frozenset[str]]] = {
    "viewer": frozenset({"viewer"}),
    "member": frozenset({"viewer", "member"}),
    "operator": frozenset({"viewer", "operator"}),
    "auditor": frozenset({"viewer", "auditor"}),
    "admin": frozenset(ROLES),
}


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= _IMPLIED.get(role, frozenset())
    return frozenset(granted)
