"""The tool registry: built-ins for everyone, installed tools per tenant."""

from __future__ import annotations

import msgspec
import pytest

from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from nome_core.tools.registry import ToolRegistry


class LookupArgs(msgspec.Struct):
    query: str


LOOKUP = ToolSpec(
    name="crm.lookup",
    description="Find a customer.",
    arguments=LookupArgs,
    source="package:crm",
)


def test_every_tenant_sees_the_builtins_by_name() -> None:
    registry = ToolRegistry()
    assert registry.names("a") == sorted(BUILTIN_TOOLS)
    assert registry.get("a", "math.evaluate") is BUILTIN_TOOLS["math.evaluate"]
    assert registry.get("a", "nope") is None


def test_an_installed_tool_is_visible_to_its_tenant_only() -> None:
    registry = ToolRegistry()
    registry.install("a", LOOKUP)
    assert registry.get("a", "crm.lookup") is LOOKUP
    assert registry.get("b", "crm.lookup") is None
    assert "crm.lookup" in registry.names("a")
    assert "crm.lookup" not in registry.names("b")
    registry.uninstall("a", "crm.lookup")
    assert registry.get("a", "crm.lookup") is None


def test_a_package_cannot_take_a_builtin_name() -> None:
    registry = ToolRegistry()
    with pytest.raises(ValueError, match="built-in"):
        registry.install("a", msgspec.structs.replace(LOOKUP, name="http.fetch"))
    assert registry.get("a", "http.fetch") is BUILTIN_TOOLS["http.fetch"]
