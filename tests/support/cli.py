"""The `nome` command run in its own process, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys


def nome(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `nome` command in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nome_api.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NOME_LOG_LEVEL": "warning", **(env or {})},
    )


def nome_free_environment(**env: str) -> dict[str, str]:
    """This process's environment without any NOME_* setting, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOME_")}
    return {**clean, "NOME_LOG_LEVEL": "warning", **env}
