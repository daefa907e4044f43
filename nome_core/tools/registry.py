"""The tools a tenant can call. Every lookup goes through here, so tools that installed
packages bring (HTTP tools, with their own specs) join the built-ins in one place."""

from __future__ import annotations

from collections.abc import Mapping

from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec


class ToolRegistry:
    """Built-in tools for everyone, plus each tenant's installed ones."""

    def __init__(self, builtin: Mapping[str, ToolSpec] = BUILTIN_TOOLS) -> None:
        self._builtin = dict(builtin)
        self._installed: dict[str, dict[str, ToolSpec]] = {}

    def install(self, tenant_id: str, spec: ToolSpec) -> None:
        """Make a package's tool callable by one tenant; a built-in name cannot be taken."""
        if spec.name in self._builtin:
            raise ValueError(f"{spec.name} is a built-in tool")
        self._installed.setdefault(tenant_id, {})[spec.name] = spec

    def uninstall(self, tenant_id: str, name: str) -> None:
        self._installed.get(tenant_id, {}).pop(name, None)

    def get(self, tenant_id: str, name: str) -> ToolSpec | None:
        return self._builtin.get(name) or self._installed.get(tenant_id, {}).get(name)

    def specs(self, tenant_id: str) -> list[ToolSpec]:
        """Every tool the tenant can call, by name."""
        found = {**self._installed.get(tenant_id, {}), **self._builtin}
        return [found[name] for name in sorted(found)]

    def names(self, tenant_id: str) -> list[str]:
        return [spec.name for spec in self.specs(tenant_id)]
