"""Schemathesis against a real server (uvicorn, PostgreSQL, Redis) over /schema/openapi.json.

Its own CLI runs every phase within a time budget: documented examples; coverage (each
parameter's boundaries and each way to break the schema); fuzzing; and stateful sequences
that follow the document's links (create a thread, then use its id). The checks: no 5xx,
and every status, content type and body as the document says. tests/support/fuzz_hooks.py
keeps the run from revoking its own key or waiting on positions the log never reaches.

`NOME_FUZZ_SECONDS` is the budget (default 40: `make test` spends about a minute here);
`NOME_FUZZ_SECONDS=300` is the long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

try:
    import uvloop
except ImportError:  # Windows
    uvloop = None

from nome_api.app import create_app
from nome_api.keyring import new_secret
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.tenants.state import tenant_id_for
from tests.support.env import PG_URL, REDIS_URL, cleanup, unique

SECONDS = int(os.environ.get("NOME_FUZZ_SECONDS", "40"))
ROOT = Path(__file__).resolve().parents[2]
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Live streams never end on their own: schemathesis reads a few events, or for a second.
STREAMS = ("GET /v1/events", "GET /v1/runs/{run_id}/stream", "GET /v1/runs/{run_id}/replay")


class Served:
    """A running server, the admin key the run uses and that key's id."""

    def __init__(self, url: str, key: str, key_id: str) -> None:
        self.url = url
        self.key = key
        self.key_id = key_id


@pytest.fixture
def served() -> Iterator[Served]:
    schema = unique("fuzz")
    prefix = f"{schema}:"
    settings = Settings(
        database_url=PG_URL,
        database_schema=schema,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        log_level="warning",
        secret_key=new_secret(),
        # One client sending thousands of requests a minute.
        rate_limit=1_000_000,
    )
    runtime = Runtime(settings)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), log_level="warning"))
    # The event loop `nome serve` runs on (uvicorn picks uvloop where it is installed).
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[listener]),), daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

        async def admin() -> tuple[str, str]:
            await runtime.app.tenants.create("fuzz")
            outcome, raw = await runtime.app.keys.create(
                Actor(tenant_id_for("fuzz")), "fuzz-admin", ["admin"]
            )
            assert outcome.state is not None
            return raw, outcome.state.id

        key, key_id = asyncio.run_coroutine_threadsafe(admin(), loop).result(timeout=30)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        bearer = {"Authorization": f"Bearer {key}"}
        while httpx.get(f"{url}/v1/threads", headers=bearer).status_code != 200:
            assert time.monotonic() < deadline, "the key never worked"
            time.sleep(0.05)
        yield Served(url, key, key_id)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        loop.close()
        listener.close()
        cleanup(schema, prefix)


def _config(served: Served) -> str:
    lines = [
        'hooks = "tests.support.fuzz_hooks"',
        "request-timeout = 10",
        "max-stream-events = 3",
        f"headers = {{ Authorization = {json.dumps('Bearer ' + served.key)} }}",
    ]
    for name in STREAMS:
        lines += ["[[operations]]", f"include-name = {json.dumps(name)}", "request-timeout = 1"]
    return "\n".join(lines) + "\n"


def test_schemathesis_finds_no_server_error_and_no_answer_its_document_does_not_describe(
    served: Served, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(served))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{served.url}/schema/openapi.json",
            "--checks",
            CHECKS,
            "--max-time",
            str(SECONDS),
            # One worker: hypothesis parses lambdas' source with `ast`, which Python 3.11 can
            # get wrong from two threads at once (SystemError: AST constructor recursion depth).
            "--workers",
            "1",
            "--continue-on-failure",
            "--suppress-health-check",
            "all",
        ],
        cwd=ROOT,
        env={**os.environ, "NOME_FUZZ_SPARE_KEY_ID": served.key_id},
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-30_000:]
    # The run tested something: every operation, in every phase that had time.
    generated = re.search(r"(\d+) generated", report)
    assert generated and int(generated.group(1)) > 0, report[-5_000:]
    print(report[report.find("WARNINGS") :])
