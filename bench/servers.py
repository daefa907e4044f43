"""Server subprocesses: `nome serve` and the bare baseline, on free ports, stopped for sure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.loadgen import Connection, build

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nome_command() -> list[str]:
    """The `nome` console script next to this interpreter, else the same entry point via -m."""
    script = Path(sys.executable).with_name("nome")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "nome_api.cli", "serve"]


class Server:
    """One server process; its output goes to a temporary log shown if it fails."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"nome-bench-{name}-", suffix=".log", delete=False
        )

    def start(self) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches only the bench, which then
        # stops the server in order (server first, then the schema it writes to).
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def ready(
        self, path: str, *, headers: dict[str, str] | None = None, within: float = 60
    ) -> None:
        """Wait until GET `path` answers 200."""
        request = build("GET", path, headers=headers)
        deadline = time.monotonic() + within
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                conn = await Connection.open("127.0.0.1", self.port)
                try:
                    response = await conn.roundtrip(request)
                finally:
                    conn.close()
                if response.status == 200:
                    return
                last = f"{response.status} {response.body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {within}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (uvicorn then runs the app's shutdown), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._log.close()
            os.unlink(self._log.name)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def bare_server(port: int, env: dict[str, str] | None = None) -> Server:
    """bench/bare.py on uvicorn; `env` on top of ours (e.g. bench.bare.stock_env)."""
    argv = [sys.executable, "-m", "uvicorn", "bench.bare:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    return Server("bare-litestar", argv, port, env or {})


def nome_server(port: int, env: dict[str, str], roles: Sequence[str] | None = None) -> Server:
    """`nome serve` with every role, or only `roles` (`--role X` each: api, projector, worker).

    A process without the api role still serves /v1/health on its port."""
    argv = nome_command()
    for role in roles or ():
        argv += ["--role", role]
    name = "nome-serve" + ("-" + "+".join(roles) if roles else "")
    return Server(name, argv, port, {**env, "NOME_PORT": str(port)})
