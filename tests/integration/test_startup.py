"""Start-up never hangs (issue 10, item 7): a configuration error is one clear line and a
non-zero exit before anything starts, and SIGTERM stops every role within seconds, also
with clients streaming."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.cli import nome_free_environment
from tests.support.env import PG_URL, REDIS_URL, schema_exists, unique
from tests.support.processes import ROOT, START_LIMIT_S, admin_key, cluster, free_port

# Safety bound: a process that has not exited by then is hung.
STOP_LIMIT_S = 20.0


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("NOME_BOOTSTRAP_ADMIN_KEY", "not-a-key", "NOME_BOOTSTRAP_ADMIN_KEY"),
        ("NOME_PORT", "eighty", "port"),
        ("NOME_MODEL_PROVIDER", "gpt", "NOME_MODEL_PROVIDER"),
        ("NOME_AUTH", "magic", "NOME_AUTH"),
    ],
)
def test_a_configuration_error_is_one_clear_line_and_an_exit_before_anything_starts(
    setting: str, value: str, says: str
) -> None:
    schema = unique("t")
    env = nome_free_environment(
        NOME_DATABASE_URL=PG_URL,
        NOME_DATABASE_SCHEMA=schema,
        NOME_REDIS_URL=REDIS_URL,
        NOME_SECRET_KEY="A" * 43,
        **{setting: value},
    )

    done = subprocess.run(
        [sys.executable, "-m", "nome_api.cli", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_LIMIT_S,
        check=False,
    )

    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("nome: configuration error:"), done.stderr[-2000:]
    assert says in lines[-1]
    assert "Traceback" not in done.stderr
    assert not schema_exists(schema)


def test_sigterm_stops_every_role_within_seconds_even_while_clients_stream(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        node = nodes.start("all", "api", "projector", "worker")
        nodes.wait_for_key(node)
        # A run waiting on an approval keeps its stream open, and the workspace stream never
        # ends on its own.
        waiting = httpx.post(
            node.url + "/v1/chat",
            json={"input": '/tool http.fetch {"url": "http://127.0.0.1:9/"}'},
            headers=nodes.headers(),
            timeout=30,
        )
        assert waiting.status_code == 202, waiting.text
        run_id = waiting.json()["run"]["id"]
        opened = threading.Event()

        def watch(path: str) -> None:
            try:
                with httpx.stream("GET", node.url + path, headers=nodes.headers(), timeout=60) as s:
                    for _ in s.iter_bytes():
                        opened.set()
            except httpx.HTTPError:
                return

        for path in (f"/v1/runs/{run_id}/stream", "/v1/events"):
            threading.Thread(target=watch, args=(path,), daemon=True).start()
        assert opened.wait(10)

        node.popen.send_signal(signal.SIGTERM)

        # Exited (by the signal, as uvicorn re-raises it once it has shut down), streams
        # closed rather than cut off.
        assert node.popen.wait(timeout=STOP_LIMIT_S) in (0, -signal.SIGTERM), node.log_tail()
        assert "timeout graceful shutdown exceeded" not in node.log_tail(20_000)


def test_a_node_that_cannot_reach_its_database_exits_with_a_clear_line() -> None:
    env = nome_free_environment(
        NOME_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        NOME_REDIS_URL=REDIS_URL,
        NOME_SECRET_KEY=admin_key()[len("nome_sk_") :],
    )

    done = subprocess.run(
        [sys.executable, "-m", "nome_api.cli", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_LIMIT_S,
        check=False,
    )

    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("nome: cannot reach the event store")
