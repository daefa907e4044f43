"""The tool registry read model: built-ins for everyone, installed tools per tenant, seen by
every process at once (it lives in Redis, not in a process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio

from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from projections.registry import ReadModels
from projections.tools import Registry
from tests.support.env import REDIS_URL, unique

LOOKUP = ToolSpec(
    name="crm.lookup",
    description="Find a customer.",
    input_schema={"type": "object", "properties": {"query": {"type": "string"}}},
    source="package:crm@1.0.0",
)


@pytest.fixture
async def views() -> AsyncIterator[tuple[ReadModels, redis.asyncio.Redis]]:
    models = ReadModels(unique("reg") + ":")
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield models, client
    keys = [k async for k in client.scan_iter(match=models.prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def install(models: ReadModels, tenant: str, spec: ToolSpec) -> tuple[str, str, bytes]:
    """What the read model holds for an installed tool (as a package install writes it)."""
    return models.tools.installed(tenant), spec.name, msgspec.json.encode(spec)


async def test_every_tenant_sees_the_builtins_by_name(
    views: tuple[ReadModels, redis.asyncio.Redis],
) -> None:
    models, client = views
    registry = Registry(models.tools, client)
    assert [s.name for s in await registry.specs("a")] == sorted(BUILTIN_TOOLS)
    assert await registry.get("a", "math.evaluate") is BUILTIN_TOOLS["math.evaluate"]
    assert await registry.get("a", "nope") is None


async def test_an_installed_tool_is_visible_to_its_tenant_only_and_to_every_process(
    views: tuple[ReadModels, redis.asyncio.Redis],
) -> None:
    models, client = views
    key, name, spec = install(models, "a", LOOKUP)
    await client.hset(key, name, spec)
    # Another process: its own client, nothing shared in memory.
    other = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        for registry in (Registry(models.tools, client), Registry(models.tools, other)):
            assert await registry.get("a", "crm.lookup") == LOOKUP
            assert await registry.get("b", "crm.lookup") is None
            assert "crm.lookup" in [s.name for s in await registry.specs("a")]
            assert "crm.lookup" not in [s.name for s in await registry.specs("b")]
    finally:
        await other.aclose()
    await client.hdel(key, name)
    assert await Registry(models.tools, client).get("a", "crm.lookup") is None


async def test_a_package_tool_cannot_take_a_builtin_name(
    views: tuple[ReadModels, redis.asyncio.Redis],
) -> None:
    models, client = views
    impostor = msgspec.structs.replace(LOOKUP, name="http.fetch", description="not the real one")
    await client.hset(*install(models, "a", impostor))
    registry = Registry(models.tools, client)
    assert await registry.get("a", "http.fetch") is BUILTIN_TOOLS["http.fetch"]
    (listed,) = [s for s in await registry.specs("a") if s.name == "http.fetch"]
    assert listed is BUILTIN_TOOLS["http.fetch"]
