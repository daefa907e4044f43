"""`nome serve` and NOME_SECRET_KEY: refused without it on PostgreSQL, made once by `make run`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nome_api.keyring import Keyring, parse_secret
from nome_core.audit import key_id, load_public_key, public_key_text
from tests.support.cli import nome, nome_free_environment
from tests.support.env import PG_URL, REDIS_URL, schema_exists, unique
from tests.support.processes import START_LIMIT_S, NomeProcess, admin_key, eventually, free_port


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (None, "NOME_SECRET_KEY is not set; it is required with a PostgreSQL database"),
        ("too-short", "NOME_SECRET_KEY must be base64url of 32 random bytes"),
    ],
)
def test_nome_serve_on_postgres_without_a_good_secret_key_exits_before_starting_anything(
    secret: str | None, says: str
) -> None:
    schema = unique("t")
    env = nome_free_environment(
        NOME_DATABASE_URL=PG_URL,
        NOME_DATABASE_SCHEMA=schema,
        NOME_REDIS_URL=REDIS_URL,
        NOME_PORT=str(free_port()),
        **({"NOME_SECRET_KEY": secret} if secret else {}),
    )

    done = subprocess.run(
        [sys.executable, "-m", "nome_api.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_LIMIT_S,
        check=False,
    )

    assert done.returncode != 0
    assert says in done.stderr, done.stderr[-2000:]
    if secret:
        assert secret not in done.stderr
    # Refused before anything started: the database was never touched.
    assert not schema_exists(schema)


def start_embedded(workdir: Path, port: int, key: str, name: str) -> NomeProcess:
    """`make run`: `nome serve` with no NOME_DATABASE_URL, in `workdir`."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(  # the handle is kept: the test stops exactly this process
            [sys.executable, "-m", "nome_api.cli", "serve"],
            cwd=workdir,
            env=nome_free_environment(NOME_PORT=str(port), NOME_BOOTSTRAP_ADMIN_KEY=key),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    process = NomeProcess(name, (), port, popen, log)
    try:
        process.wait_healthy()
    except BaseException:
        process.stop()
        raise
    return process


def public_key_of(process: NomeProcess, key: str) -> dict[str, str]:
    last: list[httpx.Response] = []

    def fetch() -> dict[str, str] | None:
        response = httpx.get(
            process.url + "/v1/audit/public-key",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        last[:] = [response]
        # 401 until the projector has the bootstrap key in its read model.
        return response.json() if response.status_code == 200 else None

    try:
        answer: dict[str, str] = eventually(fetch, what="the public key")
    except AssertionError:
        said = f"{last[0].status_code} {last[0].text[:500]}" if last else "nothing"
        raise AssertionError(f"the public key route said {said}:\n{process.log_tail()}") from None
    return answer


@pytest.mark.slow
def test_make_run_makes_its_secret_once_and_signs_with_it_after_a_restart(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "clone"
    workdir.mkdir()
    key, port = admin_key(), free_port()

    first = start_embedded(workdir, port, key, "first")
    try:
        before = public_key_of(first, key)
        export = httpx.get(
            first.url + "/v1/audit/export", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
    finally:
        first.stop()
    kept = workdir / ".nome" / "secret.key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    secret = kept.read_text().strip()
    assert secret not in first.log_tail(100_000)

    second = start_embedded(workdir, port, key, "second")
    try:
        after = public_key_of(second, key)
    finally:
        second.stop()

    assert after == before
    assert before["key_id"] == key_id(load_public_key(json.dumps(before)))
    assert kept.read_text().strip() == secret
    path = tmp_path / "export.ndjson"
    path.write_bytes(export.content)
    verified = nome("audit", "verify", str(path), "--public-key", before["public_key"])
    assert verified.returncode == 0, verified.stdout
    # The kept secret, given as NOME_SECRET_KEY, signs with the same key: a deployment that
    # moves to PostgreSQL can keep its audit key.
    assert public_key_text(Keyring(parse_secret(secret)).audit_public_key) == after["public_key"]
