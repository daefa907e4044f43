"""Audit export and verification (API.md §8) against a real Postgres and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nome_api.keyring import keyring_for
from nome_api.routes.audit import PAGE
from nome_core.audit import (
    ChainVerifier,
    ExportVerifier,
    key_id,
    load_public_key,
    public_key_text,
)
from nome_core.clock import SystemClock
from nome_core.events import Event, Head, Meta, seal
from nome_core.runs.events import MessageDelta
from nome_core.storage.rows import decode_stored, envelope_json, tenant_of
from nome_core.storage.store import EventStore
from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.asgi import call_app
from tests.support.audit import (
    OTHER_KEY,
    edited,
    flip,
    resigned,
    run_checkpoint_recipe,
    run_recipe,
    successors,
)
from tests.support.cli import nome
from tests.support.env import PG_URL
from tests.support.errors import assert_error
from tests.support.log import scan

CHAT = 'hi\n/tool math.evaluate {"expression": "1+2"}'
ACME = tenant_id_for("acme")


async def seed(api: Api, tenant: str = "acme") -> str:
    """A thread with messages and two chats whose runs call a tool; returns an admin key."""
    admin = await api.key(tenant)
    thread = await api.client.post(
        "/v1/threads", json={"title": "Prüfung ✓ 1e16"}, headers=auth(admin)
    )
    assert thread.status_code == 201, thread.text
    thread_id = thread.json()["id"]
    message = await api.client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"role": "user", "content": 'naïve "quoted" 😀 0.1'},
        headers=auth(admin),
    )
    assert message.status_code == 201, message.text
    for body in ({"input": CHAT, "thread_id": thread_id}, {"input": CHAT}):
        chat = await api.client.post("/v1/chat", json=body, headers=auth(admin))
        assert chat.status_code == 200, chat.text
        assert chat.json()["run"]["status"] == "completed"
    await api.settle()
    return admin


async def export(api: Api, key: str, **params: Any) -> httpx.Response:
    return await api.client.get("/v1/audit/export", params=params, headers=auth(key))


async def verify(api: Api, key: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/v1/audit/verify", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lines_of(response: httpx.Response) -> list[bytes]:
    """The envelope lines of an export, once its last line is seen to be the checkpoint."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.content == b"" or response.content.endswith(b"\n")
    *envelopes, checkpoint = response.content.splitlines()
    assert checkpoint.startswith(b'{"checkpoint":'), checkpoint[:200]
    return envelopes


def stored_lines(store: EventStore, tenant_id: str, until: int) -> list[bytes]:
    """What the export must be: every envelope of the tenant, straight from the log."""
    return [
        envelope_json(decode_stored(row.state), row.position)
        for row in scan(store, upto=until)
        if tenant_of(row.state) == tenant_id
    ]


def offline(lines: list[bytes]) -> ChainVerifier:
    verifier = ChainVerifier()
    for number, line in enumerate(lines, 1):
        verifier.feed_line(line, line=number)
    return verifier


def stream_of(line: bytes) -> str:
    return str(json.loads(line)["stream_id"])


def cli_env(api: Api) -> dict[str, str]:
    """What `nome audit export` needs to export what the app serves, signed as it signs."""
    settings = api.runtime.settings
    assert settings.secret_key is not None
    return {
        "NOME_DATABASE_URL": settings.database_url,
        "NOME_DATABASE_SCHEMA": settings.database_schema or "",
        "NOME_SECRET_KEY": settings.secret_key,
    }


async def public_key(api: Api, key: str) -> Ed25519PublicKey:
    response = await api.client.get("/v1/audit/public-key", headers=auth(key))
    assert response.status_code == 200, response.text
    return load_public_key(response.text)


def check_export(
    lines: list[bytes], key: Ed25519PublicKey | None, *, partial: bool = False
) -> ExportVerifier:
    verifier = ExportVerifier(partial=partial, public_key=key)
    for number, line in enumerate(lines, 1):
        verifier.feed_line(line, line=number)
    verifier.finish()
    return verifier


async def test_an_export_of_threads_messages_and_runs_with_tool_calls_verifies_online_and_offline(
    api: Api, tmp_path: Path
) -> None:
    await seed(api)
    auditor = await api.key("acme", ("auditor",))

    response = await export(api, auditor)
    lines = lines_of(response)

    until = int(response.headers["x-nome-position"])
    assert lines == stored_lines(api.runtime.store, ACME, until)
    envelopes = [json.loads(line) for line in lines]
    positions = [e["position"] for e in envelopes]
    assert positions == sorted(set(positions))
    assert {"thread.created", "thread.message_added", "run.created", "tool.called"} <= {
        e["type"] for e in envelopes
    }
    assert {"tool.completed", "message.delta", "run.completed"} <= {e["type"] for e in envelopes}
    streams = {e["stream_id"] for e in envelopes}

    assert await verify(api, auditor) == {
        "ok": True,
        "streams_checked": len(streams),
        "events_checked": len(lines),
        "first_bad": None,
    }
    assert offline(lines).ok
    path = tmp_path / "acme.ndjson"
    path.write_bytes(response.content)
    done = nome("audit", "verify", str(path))
    assert done.returncode == 0, done.stderr
    summary = f"ok: {len(lines)} events in {len(streams)} streams, every hash chain intact"
    assert done.stdout.strip() == summary
    recipe = run_recipe(path)
    assert recipe.returncode == 0, recipe.stderr
    assert recipe.stdout.strip() == f"ok: {len(lines)} events in {len(streams)} streams"


async def test_tampered_lines_of_a_real_export_are_reported_with_line_and_stream(
    api: Api, tmp_path: Path
) -> None:
    await seed(api)
    auditor = await api.key("acme", ("auditor",))
    lines = lines_of(await export(api, auditor))
    following = successors(lines)

    for i, line in enumerate(lines):
        in_string = flip(line, line.index(b'"at":"') + len(b'"at":"') + 3)
        broken = line.replace(b'"seq":', b'"seq":,', 1)
        for tampered in (in_string, broken):
            problem = offline([*lines[:i], tampered, *lines[i + 1 :]]).problems[0]
            assert (problem.line, problem.stream_id) == (i + 1, stream_of(line))
    for i, j in following.items():
        problem = offline(lines[:i] + lines[i + 1 :]).problems[0]
        assert (problem.line, problem.stream_id) == (j, stream_of(lines[i]))
        swapped = list(lines)
        swapped[i], swapped[j] = lines[j], lines[i]
        problem = offline(swapped).problems[0]
        assert (problem.line, problem.stream_id) == (i + 1, stream_of(lines[i]))

    i, j = next(iter(following.items()))
    path = tmp_path / "tampered.ndjson"
    path.write_bytes(b"\n".join(lines[:i] + lines[i + 1 :]) + b"\n")
    done = nome("audit", "verify", str(path))
    assert done.returncode == 1
    assert done.stdout.startswith(f"{path}:{j}: stream {stream_of(lines[i])} seq ")
    recipe = run_recipe(path)
    assert recipe.returncode != 0
    assert recipe.stderr.strip() == (
        f"line {j}: stream {stream_of(lines[i])}: changed, missing or out of order"
    )


class Rows:
    """Direct access to the events table, to tamper with it as an intruder would."""

    def __init__(self, api: Api) -> None:
        self.table = f'"{api.runtime.settings.database_schema}"."nome_events"'
        self.db = psycopg.connect(PG_URL, autocommit=True)

    def of_stream(self, stream_id: str) -> list[tuple[int, bytes]]:
        rows = self.db.execute(
            f"SELECT notification_id, state FROM {self.table} "
            "WHERE originator_id = %s ORDER BY originator_version",
            (stream_id,),
        ).fetchall()
        return [(position, bytes(state)) for position, state in rows]

    def set_state(self, position: int, state: bytes) -> None:
        self.db.execute(
            f"UPDATE {self.table} SET state = %s WHERE notification_id = %s",
            (state, position),
        )

    def delete(self, position: int) -> None:
        self.db.execute(f"DELETE FROM {self.table} WHERE notification_id = %s", (position,))


async def test_tampering_with_stored_rows_is_found_by_the_verify_route(api: Api) -> None:
    admin = await seed(api)
    run_id = (await api.client.get("/v1/runs", headers=auth(admin))).json()["data"][0]["id"]
    rows = Rows(api)
    try:
        stream = rows.of_stream(run_id)
        assert len(stream) >= 4
        (p2, s2), (p3, s3) = stream[1], stream[2]
        assert (await verify(api, admin))["ok"] is True

        at = s2.index(b'"at":"') + len(b'"at":"') + 3
        rows.set_state(p2, flip(s2, at))
        assert (await verify(api, admin))["first_bad"] == {
            "stream_id": run_id,
            "seq": 2,
            "position": p2,
            "reason": "the hash does not match the event's content: the event was changed",
        }
        rows.set_state(p2, s2)
        assert (await verify(api, admin))["ok"] is True

        rows.set_state(p2, s2.replace(b'"seq":', b'"seq":,', 1))
        report = await verify(api, admin)
        assert report["ok"] is False
        assert report["first_bad"] == {
            "stream_id": run_id,
            "seq": None,  # `"seq":,` can't be read back
            "position": p2,
            "reason": "the stored row is not valid JSON",
        }
        # The export leaves the unreadable row out, and the chain shows the hole.
        problem = offline(lines_of(await export(api, admin))).problems[0]
        assert (problem.stream_id, problem.seq, problem.position) == (run_id, 3, p3)
        rows.set_state(p2, s2)

        rows.set_state(p2, s3)
        rows.set_state(p3, s2)
        first_bad = (await verify(api, admin))["first_bad"]
        assert (first_bad["stream_id"], first_bad["seq"], first_bad["position"]) == (
            run_id,
            3,
            p2,
        )
        assert "missing, repeated or out of order" in first_bad["reason"]
        rows.set_state(p2, s2)
        rows.set_state(p3, s3)
        assert (await verify(api, admin))["ok"] is True

        rows.delete(p2)
        first_bad = (await verify(api, admin))["first_bad"]
        assert first_bad == {
            "stream_id": run_id,
            "seq": 3,
            "position": p3,
            "reason": "seq 3 where 2 was expected: an event of this stream is missing, "
            "repeated or out of order",
        }
        assert (await verify(api, admin, stream_id=run_id))["first_bad"] == first_bad
    finally:
        rows.db.close()


async def test_verify_of_one_stream_checks_that_stream_only(api: Api) -> None:
    admin = await seed(api)
    run_id = (await api.client.get("/v1/runs", headers=auth(admin))).json()["data"][0]["id"]
    count = len(lines_of(await export(api, admin, stream_id=run_id)))

    report = await verify(api, admin, stream_id=run_id)

    assert report == {"ok": True, "streams_checked": 1, "events_checked": count, "first_bad": None}
    assert count >= 4


async def test_an_export_holds_only_the_callers_tenant(api: Api) -> None:
    ours = await seed(api, "acme")
    theirs = await seed(api, "globex")

    acme = [json.loads(line) for line in lines_of(await export(api, ours))]
    globex = [json.loads(line) for line in lines_of(await export(api, theirs))]

    assert acme and globex
    assert {e["tenant_id"] for e in acme} == {ACME}
    assert {e["tenant_id"] for e in globex} == {tenant_id_for("globex")}
    assert not {e["id"] for e in acme} & {e["id"] for e in globex}
    assert not {e["stream_id"] for e in acme} & {e["stream_id"] for e in globex}
    # Another tenant's stream is no stream at all for us.
    foreign = globex[-1]["stream_id"]
    assert lines_of(await export(api, ours, stream_id=foreign)) == []
    assert (await verify(api, ours, stream_id=foreign))["streams_checked"] == 0
    assert (await verify(api, theirs))["events_checked"] == len(globex)


async def test_only_auditors_and_admins_may_export_or_verify(api: Api) -> None:
    await seed(api)
    for role, allowed in [
        ("viewer", False),
        ("member", False),
        ("operator", False),
        ("auditor", True),
        ("admin", True),
    ]:
        key = await api.key("acme", (role,))
        for path in ("/v1/audit/export", "/v1/audit/verify"):
            response = await api.client.get(path, headers=auth(key))
            if allowed:
                assert response.status_code == 200, (role, path)
            else:
                assert_error(response, 403, "forbidden")
    assert_error(await api.client.get("/v1/audit/export"), 401, "unauthorized")


async def test_filters_select_positions_streams_and_types(api: Api) -> None:
    admin = await seed(api)
    everything = lines_of(await export(api, admin))
    envelopes = [json.loads(line) for line in everything]
    positions = [e["position"] for e in envelopes]
    low, high = positions[3], positions[-4]
    run = next(e for e in envelopes if e["type"] == "run.created")["stream_id"]

    def where(keep: Any) -> list[bytes]:
        return [line for line, e in zip(everything, envelopes, strict=True) if keep(e)]

    window = await export(api, admin, after=low, until=high)
    assert lines_of(window) == where(lambda e: low < e["position"] <= high)
    assert window.headers["x-nome-position"] == str(high)
    assert lines_of(await export(api, admin, stream_id=run.upper())) == where(
        lambda e: e["stream_id"] == run
    )
    types = "tool.called, tool.completed,run.created"
    assert lines_of(await export(api, admin, types=types)) == where(
        lambda e: e["type"] in ("tool.called", "tool.completed", "run.created")
    )
    assert lines_of(await export(api, admin, after=low, types="message.delta")) == where(
        lambda e: e["position"] > low and e["type"] == "message.delta"
    )
    assert lines_of(await export(api, admin, after=positions[-1])) == []


async def test_bad_filter_values_are_a_400_with_the_error_body(api: Api) -> None:
    admin = await api.key()
    for params in [
        {"after": "-1"},
        {"after": "x"},
        {"until": "-2"},
        {"until": "1.5"},
        {"after": "9", "until": "3"},
        {"stream_id": "nope"},
        {"types": ","},
        {"types": "run.created,no.such_type"},
    ]:
        assert_error(await export(api, admin, **params), 400, "bad_request")
    response = await api.client.get(
        "/v1/audit/verify", params={"stream_id": "nope"}, headers=auth(admin)
    )
    assert_error(response, 400, "bad_request")


async def test_the_cli_export_writes_the_same_bytes_as_the_route(api: Api, tmp_path: Path) -> None:
    admin = await seed(api)
    response = await export(api, admin)
    until = response.headers["x-nome-position"]
    env = cli_env(api)
    out = tmp_path / "acme.ndjson"

    done = nome("audit", "export", "--out", str(out), "--tenant", "acme", "--until", until, env=env)

    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == response.content
    assert not (tmp_path / "acme.ndjson.partial").exists()
    count = len(lines_of(response))
    assert done.stdout.splitlines()[-1] == (
        f"exported {count} events of tenant {ACME} (positions 1..{until}) to {out}"
    )
    by_id = tmp_path / "by-id.ndjson"
    done = nome(
        "audit", "export", "--out", str(by_id), "--tenant-id", ACME, "--until", until, env=env
    )
    assert done.returncode == 0, done.stderr
    assert by_id.read_bytes() == response.content
    assert nome("audit", "verify", str(out)).returncode == 0

    typed = tmp_path / "typed.ndjson"
    done = nome(
        "audit",
        "export",
        "--out",
        str(typed),
        "--tenant",
        "acme",
        "--types",
        "tool.called",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "--partial" in done.stdout
    assert nome("audit", "verify", str(typed)).returncode == 1
    assert nome("audit", "verify", "--partial", str(typed)).returncode == 0

    nobody = nome("audit", "export", "--out", str(tmp_path / "x"), "--tenant", "nobody", env=env)
    assert nobody.returncode == 1 and "no such tenant" in nobody.stderr
    negative = nome("audit", "export", "--out", str(tmp_path / "x"), "--after", "-1", env=env)
    assert negative.returncode == 2 and "after" in negative.stderr
    assert not (tmp_path / "x").exists()


async def test_every_export_ends_with_a_checkpoint_signed_with_the_deployments_key(
    api: Api,
) -> None:
    await seed(api)
    auditor = await api.key("acme", ("auditor",))

    response = await export(api, auditor)

    lines = lines_of(response)
    envelopes = [json.loads(line) for line in lines]
    heads = {e["stream_id"]: (e["seq"], e["receipt"]["hash"]) for e in envelopes}
    listed = "".join(f"{s} {seq} {h}\n" for s, (seq, h) in sorted(heads.items()))
    until = int(response.headers["x-nome-position"])
    document = json.loads(response.content.splitlines()[-1])
    assert document["checkpoint"] == {
        "version": 1,
        "tenant_id": ACME,
        "filter": {"after": 0, "until": until, "stream_id": None, "types": None},
        "events": len(lines),
        "streams": len(heads),
        "last_position": envelopes[-1]["position"],
        "heads": "sha256:" + hashlib.sha256(listed.encode()).hexdigest(),
    }
    key = await public_key(api, auditor)
    verifier = check_export(response.content.splitlines(), key)
    assert verifier.ok, verifier.problems
    assert verifier.signed_by == document["signature"]["key_id"] == key_id(key)
    # The server's own check of the log counts what the checkpoint records.
    report = await verify(api, auditor)
    assert (report["events_checked"], report["streams_checked"]) == (len(lines), len(heads))
    # Repeated, the export is the same bytes, signature included.
    assert (await export(api, auditor, until=until)).content == response.content


async def test_a_cut_or_forged_real_export_fails_offline_and_an_untouched_one_passes(
    api: Api, tmp_path: Path
) -> None:
    await seed(api)
    auditor = await api.key("acme", ("auditor",))
    response = await export(api, auditor)
    key = await public_key(api, auditor)
    path, key_file = tmp_path / "export.ndjson", tmp_path / "key.json"
    key_file.write_text(json.dumps({"public_key": public_key_text(key)}))
    *envelopes, checkpoint = response.content.splitlines()
    dropped_stream = stream_of(envelopes[-1])
    other_key = key_id(OTHER_KEY.public_key())
    cases = {
        "untouched": (response.content.splitlines(), None),
        "last event line dropped": (
            [*envelopes[:-1], checkpoint],
            f"{len(envelopes) - 1} events where the checkpoint records {len(envelopes)}",
        ),
        "checkpoint dropped": (envelopes, "no checkpoint: the export may have been cut short"),
        "whole stream dropped": (
            [line for line in envelopes if stream_of(line) != dropped_stream] + [checkpoint],
            "streams where the checkpoint records",
        ),
        "count edited": (
            [*envelopes, edited(checkpoint, events=len(envelopes) + 1)],
            "the signature does not verify under the given key",
        ),
        "re-signed with another key": (
            [*envelopes[:-1], resigned(checkpoint, OTHER_KEY, events=len(envelopes) - 1)],
            f"signed by key {other_key}, not by the given key {key_id(key)}",
        ),
    }
    for name, (lines, complaint) in cases.items():
        verifier = check_export(lines, key)
        path.write_bytes(b"\n".join(lines) + b"\n")
        done = nome("audit", "verify", str(path), "--public-key", str(key_file))
        if complaint is None:
            assert verifier.ok, verifier.problems
            assert done.returncode == 0, done.stdout
            assert run_checkpoint_recipe(path, public_key_text(key)).returncode == 0
            continue
        assert any(complaint in p.reason for p in verifier.problems), (name, verifier.problems)
        assert done.returncode == 1, (name, done.stdout)
        assert complaint in done.stdout, (name, done.stdout)
        assert run_checkpoint_recipe(path, public_key_text(key)).returncode != 0, name


async def test_http_and_cli_exports_of_one_snapshot_end_with_the_same_checkpoint(
    api: Api, tmp_path: Path
) -> None:
    admin = await seed(api)
    everything = [json.loads(line) for line in lines_of(await export(api, admin))]
    run = next(e for e in everything if e["type"] == "run.created")["stream_id"]
    after = everything[3]["position"]
    key = public_key_text(await public_key(api, admin))
    out = tmp_path / "cli.ndjson"
    for params, flags, partial in [
        ({}, [], False),
        ({"stream_id": run}, ["--stream-id", run], False),
        ({"types": "tool.called,run.created"}, ["--types", "tool.called,run.created"], True),
        ({"after": after}, ["--after", str(after)], True),
    ]:
        response = await export(api, admin, **params)
        until = response.headers["x-nome-position"]

        done = nome(
            "audit", "export", "--out", str(out), "--tenant", "acme", "--until", until, *flags,
            env=cli_env(api),
        )  # fmt: skip

        assert done.returncode == 0, done.stderr
        assert out.read_bytes().splitlines()[-1] == response.content.splitlines()[-1]
        assert out.read_bytes() == response.content
        # A filtered export carries a checkpoint over what it holds.
        checkpoint = json.loads(response.content.splitlines()[-1])["checkpoint"]
        assert checkpoint["events"] == len(lines_of(response))
        check = ["--partial"] if partial else []
        verified = nome("audit", "verify", *check, "--public-key", key, str(out))
        assert verified.returncode == 0, verified.stdout


async def test_the_public_key_route_gives_the_deployments_key_to_auditors_and_admins_only(
    api: Api,
) -> None:
    expected = keyring_for(api.runtime.settings).audit_public_key
    for role, allowed in [
        ("viewer", False),
        ("member", False),
        ("operator", False),
        ("auditor", True),
        ("admin", True),
    ]:
        key = await api.key("acme", (role,))
        response = await api.client.get("/v1/audit/public-key", headers=auth(key))
        if not allowed:
            assert_error(response, 403, "forbidden")
            continue
        assert response.status_code == 200, response.text
        assert response.json() == {
            "alg": "Ed25519",
            "key_id": key_id(expected),
            "public_key": public_key_text(expected),
        }
    assert_error(await api.client.get("/v1/audit/public-key"), 401, "unauthorized")
    # The answer is the public half only: the secret it is derived from never leaves.
    secret = api.runtime.settings.secret_key
    assert secret is not None
    assert secret not in response.text


TEXT = "The quick brown fox jumps over the lazy dog; naïve café, 0.1 + 0.2. " * 5
EVENTS = 100_000
PER_STREAM = 1_000
BATCH = 2_000
# An export of EVENTS envelopes is about 70 MB; streamed, it must never be held at once.
MEMORY_BOUND = 24 * 1024 * 1024


def insert_events(store: EventStore, tenant_id: str) -> None:
    """EVENTS message deltas in run-shaped streams, straight into the log, BATCH per insert."""
    clock = SystemClock()
    pending: list[Event] = []
    for _ in range(EVENTS // PER_STREAM):
        stream = clock.new_id()
        pending += seal(
            [MessageDelta(message_id=f"m{n}", text=TEXT) for n in range(PER_STREAM)],
            stream_id=stream,
            head=Head(),
            tenant_id=tenant_id,
            thread_id=None,
            run_id=stream,
            meta=Meta(),
            clock=clock,
        )
        while len(pending) >= BATCH:
            store.insert(pending[:BATCH])
            pending = pending[BATCH:]
    if pending:
        store.insert(pending)


class RssSampler:
    """Peak resident set size of this process while it runs, sampled every few ms."""

    def __init__(self) -> None:
        self.peak = self.start = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
async def test_an_export_of_100000_events_streams_in_constant_memory(api: Api) -> None:
    auditor = await api.key("acme", ("auditor",))
    store = api.runtime.store
    started = time.perf_counter()
    await asyncio.to_thread(insert_events, store, ACME)
    inserted_s = time.perf_counter() - started
    head = store.head()
    expected = sum(1 for row in scan(store, upto=head) if tenant_of(row.state) == ACME)
    assert expected >= EVENTS
    # Let the projector finish with the new events, so only the export allocates below.
    deadline = time.monotonic() + 180
    names = [p.name for p in api.runtime.read_models.all]
    while min(api.runtime.runner.positions(names).values()) < head:
        assert time.monotonic() < deadline, "the projector did not catch up"
        await asyncio.sleep(0.05)

    seen = {"lines": 0, "bytes": 0, "first": b"", "last": b"", "checkpoint": b""}

    def consume(chunk: bytes) -> None:
        # Counted and dropped, as a client writing to a socket or a file would.
        if chunk.startswith(b'{"checkpoint":'):  # the last chunk, a line of its own
            seen["checkpoint"] = chunk
            return
        if not seen["first"]:
            seen["first"] = chunk[: chunk.index(b"\n")]
        seen["lines"] += chunk.count(b"\n")
        seen["bytes"] += len(chunk)
        seen["last"] = chunk.rstrip(b"\n").rsplit(b"\n", 1)[-1]

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.perf_counter()
        with RssSampler() as rss:
            answer = call_app(
                api,
                "/v1/audit/export",
                headers=auth(auditor),
                client=("203.0.113.7", 40000),
                on_body=consume,
            )
        export_s = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    print(
        f"\ninserted {EVENTS} events in {inserted_s:.1f}s; exported {seen['lines']} lines, "
        f"{seen['bytes'] / 2**20:.1f} MiB in {answer.chunks} chunks, {export_s:.1f}s "
        f"(under tracemalloc); peak traced growth {peak / 2**20:.2f} MiB; "
        f"RSS growth {(rss.peak - rss.start) / 2**20:.1f} MiB"
    )
    assert answer.status == 200
    assert answer.headers["x-nome-position"] == str(head)
    assert seen["lines"] == expected
    assert json.loads(seen["first"])["tenant_id"] == ACME
    assert json.loads(seen["last"])["position"] == head
    checkpoint = json.loads(seen["checkpoint"])["checkpoint"]
    assert checkpoint["events"] == expected
    assert checkpoint["streams"] >= EVENTS // PER_STREAM  # and the tenant's own, and its key's
    assert checkpoint["last_position"] == head
    assert answer.chunks >= EVENTS // PAGE
    # The bound is well below the export's size, so holding the export would fail it.
    assert seen["bytes"] > 2 * MEMORY_BOUND
    assert peak < MEMORY_BOUND, f"peak traced memory grew by {peak / 2**20:.1f} MiB"
