"""Package tools (API.md §6a): each call goes to the endpoint its install names, an HTTP
endpoint (signed with the install's secret) or an MCP server. The install is read from the
log at call time, so a package uninstalled mid-run is known at once: its tools' calls get
an `error` receipt, `tool_uninstalled`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nome_api.executors import http, mcp
from nome_api.keyring import Keyring
from nome_core.marketplace.state import InstallState
from nome_core.tools.builtin import ToolSpec
from nome_core.tools.executor import CallContext, ToolFailed
from nome_core.tools.state import Call

UNINSTALLED = "tool_uninstalled: the tool's package is not installed"


def package_of(spec: ToolSpec) -> str | None:
    """`package:<name>@<version>` → name; None for a tool of another source."""
    if not spec.source.startswith("package:"):
        return None
    return spec.source.removeprefix("package:").rsplit("@", 1)[0]


class PackageExecutor:
    def __init__(
        self,
        installs: Callable[[str, str], InstallState | None],
        # Loaded on the first signed call (a deployment without packages needs no secret).
        keyring: Callable[[], Keyring],
        *,
        timeout_s: float,
        allow_hosts: frozenset[str],
    ) -> None:
        self.installs = installs
        self.keyring = keyring
        self.timeout_s = timeout_s
        self.allow_hosts = allow_hosts

    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        package = package_of(spec)
        assert package is not None
        install = await asyncio.to_thread(self.installs, context.tenant_id, package)
        tool = next((t for t in install.tools if t.name == spec.name), None) if install else None
        if install is None or tool is None or install.install_id is None:
            raise ToolFailed(UNINSTALLED)
        short = tool.name.removeprefix(f"{package}.")
        if tool.endpoint.type == "mcp":
            return await mcp.call_tool(
                tool.endpoint.url,
                tool.endpoint.tool or short,
                call.arguments,
                timeout_s=self.timeout_s,
                allow_hosts=self.allow_hosts,
            )
        return await http.call_http(
            tool.endpoint.url,
            tool=short,
            arguments=call.arguments,
            call_id=call.call_id,
            run_id=context.run_id,
            tenant_id=context.tenant_id,
            secret=self.keyring().signing_secret(install.install_id),
            timeout_s=self.timeout_s,
            allow_hosts=self.allow_hosts,
        )


class SourceExecutor:
    """Each call to the executor of its tool's source."""

    def __init__(self, builtin: Any, packages: PackageExecutor) -> None:
        self.builtin = builtin
        self.packages = packages

    async def run(self, spec: ToolSpec, call: Call, context: CallContext) -> Any:
        if package_of(spec) is not None:
            return await self.packages.run(spec, call, context)
        return await self.builtin.run(spec, call, context)
