"""The tools a tenant can call: a port. Built-in tools are everyone's; installed packages add
their own per tenant, recorded as events and kept in a read model
(projections/tools.py), so an install seen by one process is callable from every worker."""

from __future__ import annotations

from typing import Protocol

from nome_core.tools.builtin import ToolSpec


class ToolRegistry(Protocol):
    async def get(self, tenant_id: str, name: str) -> ToolSpec | None:
        """The tool, if the tenant can call it."""
        ...

    async def specs(self, tenant_id: str) -> list[ToolSpec]:
        """Every tool the tenant can call, by name."""
        ...
