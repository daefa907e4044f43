"""The one place servers start and stop: the bare baselines' server, and NOME as compose.yaml
deploys it (the API in one process, the projector and the worker in another, one uvicorn
worker each) or, for a diagnostic, with every role in one process.

A server starts when a figure first asks for it and stays up, so figures in a row share it.
An idle server costs next to nothing (the bare one ~0.2% of a core, NOME ~3%: noise beside
the 10-30% that other sessions on these cores cause), so the bare server may stay up while
NOME is measured and the other way round; but two NOMEs on one schema would share the
projections' leases and the run queue, so asking for one shape of NOME stops the other.
Readiness is waited for by blocking: figures run one at a time, so no event loop has
anything else to do meanwhile.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import internals
from bench.client import HOST

ROOT = Path(__file__).resolve().parent.parent
NOME = str(Path(sys.executable).with_name("nome"))  # the console script of this venv


class Server:
    """One server process; its output goes to a log shown if it fails."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115
        # A session of its own: Ctrl-C reaches only the bench, which then stops its servers
        # before it drops the schema they write to.
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self, path: str, headers: dict[str, str] | None = None, within: float = 60) -> None:
        """Block until GET `path` answers 200."""
        deadline, last = time.monotonic() + within, "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = Path(self.log.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{log}")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                conn.request("GET", path, headers=headers or {})
                answer = conn.getresponse()
                if answer.status == 200:
                    return
                last = f"{answer.status} {answer.read()[:200]!r}"
            except OSError as exc:
                last = repr(exc)
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: GET {path} not 200 after {within}s: {last}")

    def stop(self) -> None:
        """SIGTERM (uvicorn runs the app's shutdown), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bare_server(env: dict[str, str]) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", HOST]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = Server("bare", argv, env, port)
    server.ready("/doc/x")
    return server


class Servers:
    def __init__(self, nome_env: dict[str, str], stock_env: dict[str, str]) -> None:
        self.nome_env, self.stock_env = nome_env, stock_env
        self.admin = {"Authorization": f"Bearer {nome_env['NOME_BOOTSTRAP_ADMIN_KEY']}"}
        self._bare: Server | None = None
        self._nome: list[Server] = []
        self._all_roles = False
        self._enterprise = False
        self._tenants: dict[str, dict[str, str]] = {}

    def bare(self) -> Server:
        """The bare baselines' server (bench/bare.py)."""
        if self._bare is None:
            self._bare = bare_server({})
        return self._bare

    @contextlib.contextmanager
    def stock(self) -> Iterator[Server]:
        """A bare server that also serves POST /stock/save, up only while it is used: its
        stock application holds one Postgres connection per client."""
        server = bare_server(self.stock_env)
        try:
            yield server
        finally:
            server.stop()

    def nome(self, *, all_roles: bool = False) -> Server:
        """NOME as deployed, or with every role in one process: its API's process."""
        if not self._nome or self._all_roles != all_roles:
            self.stop_nome()
            self._all_roles = all_roles
            for roles in [[]] if all_roles else [["api"], ["projector", "worker"]]:
                port = free_port()
                argv = [NOME, "serve", *(a for role in roles for a in ("--role", role))]
                env = {**self.nome_env, "NOME_PORT": str(port)}
                self._nome.append(Server("+".join(roles) or "all-roles", argv, env, port))
                # One after the other: two processes creating the event table at once collide.
                # A process without the api role still answers /v1/health.
                self._nome[-1].ready("/v1/health")
            # 200 once the bootstrap key has reached the keys read model.
            self._nome[0].ready("/v1/threads?limit=1", self.admin)
            if not self._enterprise:
                internals.enterprise_default(self.nome_env)
                self._enterprise = True
        return self._nome[0]

    def tenant(self, name: str) -> dict[str, str]:
        """The auth header of an admin key of tenant `name` (free plan: credits of its own),
        made once by the operator CLI, once the running NOME accepts it."""
        if name not in self._tenants:
            made = subprocess.run(
                [NOME, "keys", "create", "--tenant", name, "--role", "admin"],
                env={**os.environ, **self.nome_env},
                capture_output=True,
                text=True,
                check=True,
            )
            auth = {"Authorization": f"Bearer {made.stdout.split()[-1]}"}  # its last line
            self._nome[0].ready("/v1/bootstrap", auth, within=30)
            self._tenants[name] = auth
        return self._tenants[name]

    def stop_nome(self) -> None:
        for server in self._nome:  # the API first: no new work reaches the worker
            server.stop()
        self._nome.clear()

    def stop(self) -> None:
        self.stop_nome()
        if self._bare is not None:
            self._bare.stop()
            self._bare = None
