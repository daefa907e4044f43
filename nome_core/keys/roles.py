"""Roles and what each one grants (API.md §0)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

Role = Literal["viewer", "member", "operator", "auditor", "admin"]
ROLES: Final = ("viewer", "member", "operator", "auditor", "admin")

# Each role includes viewer; admin includes everything.
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
