"""The README's marketplace walk-through, run as a reader would paste it: `make run`, import
the example package from git, install it, start its tool server with the signing secret,
and a run whose tool call the server answers. Only the port (and the scratch paths under
/tmp) are this test's own, so a NOME already on 8080 does not answer it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import free_port

ROOT = Path(__file__).parents[2]
SERVER = "examples/packages/weather/server.py"


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Walk-through with the example package") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "the walk-through's code block"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_marketplace_walkthrough_works_as_written(tmp_path: Path) -> None:
    port, scratch = free_port(), f"/tmp/nome-walkthrough-{os.getpid()}"
    script = (
        walkthrough()
        .replace("localhost:8080", f"localhost:{port}")
        .replace("/tmp/", f"{scratch}/")
        .replace(
            "examples/packages/weather/server.py", f"{ROOT}/examples/packages/weather/server.py"
        )
    )
    weather_port = free_port()
    script = f"mkdir -p {scratch}\n" + script.replace(
        "NOME_SIGNING_SECRET=$SECRET", f"PORT={weather_port} NOME_SIGNING_SECRET=$SECRET"
    )
    # The manifest names the tool server's port: the copy points at this test's.
    script = script.replace(
        "git -C",
        f"sed -i 's/:8765/:{weather_port}/' {scratch}/weather/nome-package.json; git -C",
        1,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOME_")}
    env["NOME_PORT"] = str(port)
    shell = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = shell.communicate(timeout=180)
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        subprocess.run(["rm", "-rf", scratch], check=False)
    assert shell.returncode == 0, out
    last = out.strip().splitlines()[-1]
    assert '"status":"ok"' in last and '"forecast":"sunny"' in last, out
