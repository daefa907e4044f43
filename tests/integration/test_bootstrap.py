"""First start: the bootstrap admin key, also when several processes start at once."""

from __future__ import annotations

import asyncio

import msgspec

from nome_api.runtime import Runtime
from nome_api.settings import Settings
from nome_core.keys import secrets as key_secrets
from tests.support.log import scan

KEY = "nome_sk_" + "k" * 43


async def test_processes_starting_together_make_one_tenant_and_one_bootstrap_key(
    settings: Settings,
) -> None:
    runtimes = [Runtime(settings, roles=()) for _ in range(3)]
    for runtime in runtimes:
        runtime.writer.start()
    try:
        await asyncio.gather(*(r.bootstrap_admin(KEY) for r in runtimes))
        await asyncio.gather(*(r.bootstrap_admin(KEY) for r in runtimes))  # a restart
        rows = list(scan(runtimes[0].store))
    finally:
        for runtime in runtimes:
            runtime.writer.stop()
            runtime.store.close()
    types = [row.type for row in rows]
    assert types.count("tenant.created") == 1
    assert types.count("key.created") == 1
    assert key_secrets.digest(KEY).encode() in rows[types.index("key.created")].state


def test_a_malformed_bootstrap_key_is_refused(settings: Settings) -> None:
    # By the settings check, before any role starts (nome serve exits with it: test_startup).
    malformed = msgspec.structs.replace(settings, bootstrap_admin_key="not-a-key")
    try:
        malformed.check()
    except ValueError as exc:
        assert "NOME_BOOTSTRAP_ADMIN_KEY" in str(exc)
    else:
        raise AssertionError("a malformed key was accepted")
