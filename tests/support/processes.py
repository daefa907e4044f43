"""Real `nome serve --role ...` processes against the test Postgres and Redis.

A `Cluster` owns one Postgres schema and one Redis key prefix, runs `nome migrate` once, and
starts processes on free ports with `NOME_MIGRATE=0`. `close()` kills every process it
started (by its own Popen handle) and then drops the schema and the keys.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from nome_api.keyring import new_secret
from tests.support.env import PG_URL, REDIS_URL, cleanup, unique

ROOT = Path(__file__).resolve().parents[2]
# Safety bounds only: how long a process may take to answer /v1/health, and how long a test
# waits for something the system must eventually do.
START_LIMIT_S = 60.0
EVENTUAL_LIMIT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_key() -> str:
    """A well-formed API key: `nome_sk_` + 43 url-safe characters."""
    key = "nome_sk_" + secrets.token_urlsafe(32)
    assert len(key) == len("nome_sk_") + 43
    return key


class NomeProcess:
    """One `nome serve` child process."""

    def __init__(self, name: str, roles: tuple[str, ...], port: int, popen: Any, log: Path):
        self.name = name
        self.roles = roles
        self.port = port
        self.popen: subprocess.Popen[bytes] = popen
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to release leases or finish a step."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(self.url + "/v1/health", timeout=2)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never answered /v1/health:\n{self.log_tail()}")


class Cluster:
    """NOME processes sharing one schema, one key prefix, one bootstrap admin key and one
    deployment secret."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.schema = unique("t")
        self.prefix = f"{self.schema}:"
        self.admin_key = admin_key()
        self.platform_key = admin_key()
        # One deployment secret for every process, as NOME_SECRET_KEY in production.
        self.secret_key = new_secret()
        self.env = env
        self.processes: list[NomeProcess] = []
        self._migrated = False

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOME_")}
        env.update(
            NOME_DATABASE_URL=PG_URL,
            NOME_DATABASE_SCHEMA=self.schema,
            NOME_REDIS_URL=REDIS_URL,
            NOME_REDIS_PREFIX=self.prefix,
            NOME_BOOTSTRAP_ADMIN_KEY=self.admin_key,
            NOME_BOOTSTRAP_PLATFORM_KEY=self.platform_key,
            NOME_SECRET_KEY=self.secret_key,
            NOME_LOG_LEVEL="warning",
            NOME_LOG_FORMAT="console",
            NOME_MIGRATE="0",
            NOME_HOST="127.0.0.1",
            # Keepalives every second keep a reader's loop turning while a stream is quiet.
            NOME_SSE_HEARTBEAT_S="1",
            NOME_REVISION="test",
        )
        env.update(self.env)
        env.update(extra)
        return env

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "nome_api.cli", "migrate"],
            cwd=ROOT,
            env=self.environment(NOME_MIGRATE="1"),
            check=True,
            capture_output=True,
            timeout=START_LIMIT_S,
        )
        self._migrated = True

    def spawn(self, name: str, *roles: str, **env: str) -> NomeProcess:
        """Start a process without waiting for it."""
        if not self._migrated:
            self.migrate()
        port = free_port()
        args = [sys.executable, "-m", "nome_api.cli", "serve"]
        for role in roles:
            args += ["--role", role]
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(  # the handle is kept: close() kills exactly these
                args,
                cwd=ROOT,
                env=self.environment(NOME_PORT=str(port), **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = NomeProcess(name, roles, port, popen, log)
        self.processes.append(process)
        return process

    def start(self, name: str, *roles: str, **env: str) -> NomeProcess:
        process = self.spawn(name, *roles, **env)
        process.wait_healthy()
        return process

    def start_many(self, *specs: tuple[str, tuple[str, ...]]) -> list[NomeProcess]:
        """Start several processes at once and wait until each answers /v1/health."""
        started = [self.spawn(name, *roles) for name, roles in specs]
        for process in started:
            process.wait_healthy()
        return started

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}", **extra}

    def wait_for_key(self, api: NomeProcess) -> None:
        """The bootstrap key works once the projector has put it in the read model."""
        deadline = time.monotonic() + EVENTUAL_LIMIT_S
        while time.monotonic() < deadline:
            response = httpx.get(api.url + "/v1/bootstrap", headers=self.headers(), timeout=5)
            if response.status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"the bootstrap key never worked on {api.name}")

    def fund(self, api: NomeProcess, credits: int) -> None:
        """Grant the default tenant `credits` (its free plan starts with enough for about
        fifty runs): for tests that make more runs than that."""
        bootstrap = httpx.get(api.url + "/v1/bootstrap", headers=self.headers(), timeout=5)
        tenant_id = bootstrap.json()["tenant"]["id"]
        headers = {"Authorization": f"Bearer {self.platform_key}", "Idempotency-Key": "fund"}
        deadline = time.monotonic() + EVENTUAL_LIMIT_S
        while True:  # the platform key works once the projector has put it in the read model
            granted = httpx.post(
                f"{api.url}/v1/platform/tenants/{tenant_id}/credits",
                json={"amount": credits, "kind": "promotional", "reason": "test load"},
                headers=headers,
                timeout=5,
            )
            if granted.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert granted.status_code == 201, granted.text

    def close(self) -> None:
        for process in self.processes:
            # Best effort per process: the cleanup below must run whatever happens here.
            with contextlib.suppress(Exception):
                process.kill()
        cleanup(self.schema, self.prefix)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)


@contextmanager
def cluster(workdir: Path, **env: str) -> Iterator[Cluster]:
    nodes = Cluster(workdir, **env)
    try:
        yield nodes
    finally:
        nodes.close()


def eventually(
    probe: Any, *, what: str, limit: float = EVENTUAL_LIMIT_S, every: float = 0.05
) -> Any:
    """Call `probe()` until it returns something truthy; the limit is only a safety bound."""
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)


def run_events(
    client: httpx.Client, base: str, headers: Mapping[str, str], run_id: str
) -> list[dict[str, Any]]:
    """Every event of a run, from GET /v1/runs/{id}/events, paging through the cursor."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"{base}/v1/runs/{run_id}/events", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return events
