"""An Idempotency-Key commits with its command's events (issue 10, item 1): a retry after a
Redis wipe, after a crash between the append and the answer, or after a restart returns
the first result and appends nothing; two requests with one key never make two resources.

"Crash after the append, before the answer was remembered" is the first request's answer
cache deleted after it returned: that is all such a crash leaves behind (the pending
marker expires). A wipe is FLUSHDB of the test's own keys.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import msgspec
import psycopg

from nome_api.runtime import Runtime
from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.env import PG_URL
from tests.support.errors import assert_error


def with_key(key: str, idempotency_key: str) -> dict[str, str]:
    return auth(key, **{"Idempotency-Key": idempotency_key})


def forget_answers(api: Api) -> None:
    """Every cached answer and pending marker gone, as after FLUSHDB or a crash."""
    client = api.runtime.redis_sync
    prefix = api.runtime.settings.redis_prefix
    for key in client.scan_iter(match=f"{prefix}idem:*"):
        client.delete(key)


async def twice(
    api: Api, key: str, path: str, body: dict[str, Any], idem: str
) -> tuple[httpx.Response, httpx.Response, int, int]:
    """The request, its answers forgotten, the request again; the log head after each."""
    first = await api.client.post(path, json=body, headers=with_key(key, idem))
    head = api.runtime.store.head()
    forget_answers(api)
    again = await api.client.post(path, json=body, headers=with_key(key, idem))
    return first, again, head, api.runtime.store.head()


async def test_a_thread_creation_retried_after_its_answer_was_lost_returns_the_same_thread(
    api: Api,
) -> None:
    key = await api.key()
    first, again, head, after = await twice(
        api, key, "/v1/threads", {"title": "once", "metadata": {"k": "v"}}, "t-1"
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    # Answered from the log, it reports a position that covers the first command's commit.
    assert int(again.headers["x-nome-position"]) >= int(first.headers["x-nome-position"])
    assert after == head


async def test_a_run_retried_after_a_redis_wipe_is_the_same_run_not_a_second_one(
    api: Api,
) -> None:
    key = await api.key()
    thread = (await api.client.post("/v1/threads", json={}, headers=auth(key))).json()
    body = {"thread_id": thread["id"], "input": "hello"}
    first, again, _, _ = await twice(api, key, "/v1/runs", body, "r-1")

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    await api.settle()
    runs = (await api.client.get(f"/v1/runs?thread_id={thread['id']}", headers=auth(key))).json()
    assert runs["total_count"] == 1


async def test_a_message_key_and_agent_retried_after_a_wipe_are_made_once(api: Api) -> None:
    admin = await api.key()
    thread = (await api.client.post("/v1/threads", json={}, headers=auth(admin))).json()
    for path, body, idem in [
        (f"/v1/threads/{thread['id']}/messages", {"content": "hi"}, "m-1"),
        ("/v1/agents", {"name": "a", "instructions": "be brief"}, "a-1"),
        ("/v1/admin/keys", {"name": "deploy", "roles": ["viewer"]}, "k-1"),
    ]:
        first, again, head, after = await twice(api, admin, path, body, idem)
        assert first.status_code == again.status_code == 201, (path, again.text)
        assert again.json() == first.json(), path
        assert after == head, path

    # The key shown again is the key that works.
    created = first.json()
    await api.settle()
    assert (await api.client.get("/v1/threads", headers=auth(created["key"]))).status_code == 200


async def test_a_chat_retried_after_a_wipe_answers_the_run_it_started(api: Api) -> None:
    key = await api.key()
    body = {"input": "hi there"}
    first, again, _, _ = await twice(api, key, "/v1/chat", body, "c-1")

    assert first.status_code == again.status_code == 200
    assert again.json()["run"]["id"] == first.json()["run"]["id"]
    assert again.json()["message"] == first.json()["message"]
    await api.settle()
    threads = (await api.client.get("/v1/threads", headers=auth(key))).json()
    assert threads["total_count"] == 1


async def test_a_direct_call_retried_after_a_wipe_is_not_run_again(api: Api) -> None:
    key = await api.key()
    body = {"tool": "math.evaluate", "arguments": {"expression": "6*7"}}
    first, again, head, after = await twice(api, key, "/v1/tools/call", body, "d-1")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert after == head


async def test_the_same_key_with_another_body_after_a_wipe_is_a_mismatch(api: Api) -> None:
    key = await api.key()
    await api.client.post("/v1/threads", json={"title": "a"}, headers=with_key(key, "x"))
    forget_answers(api)
    other = await api.client.post("/v1/threads", json={"title": "b"}, headers=with_key(key, "x"))

    assert_error(other, 409, "idempotency_mismatch")


async def test_concurrent_requests_with_one_key_and_no_pending_marker_make_one_thread(
    api: Api,
) -> None:
    key = await api.key()
    # The pending marker is what stops a concurrent duplicate first; with Redis wiped under
    # every request, only the claim in the database is left to do it.
    prefix = api.runtime.settings.redis_prefix
    client = api.runtime.redis
    original = client.set

    async def set_without_markers(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(f"{prefix}idem:") and kwargs.get("nx"):
            return True
        return await original(name, *args, **kwargs)

    client.set = set_without_markers  # type: ignore[method-assign]
    try:
        answers = await asyncio.gather(
            *(
                api.client.post("/v1/threads", json={"title": "one"}, headers=with_key(key, "c"))
                for _ in range(8)
            )
        )
    finally:
        client.set = original  # type: ignore[method-assign]

    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    await api.settle()
    assert (await api.client.get("/v1/threads", headers=auth(key))).json()["total_count"] == 1


async def test_a_claim_outlives_a_restart_and_lapses_after_24_hours(api: Api) -> None:
    key = await api.key()
    body = {"title": "before the restart"}
    first = await api.client.post("/v1/threads", json=body, headers=with_key(key, "r"))
    forget_answers(api)
    # Another process with the same store and no memory of the request.
    other = Runtime(api.runtime.settings, roles=())
    try:
        claimed = other.store.claimed(tenant_id_for("acme"), _sha_of(api, key, "r"))
    finally:
        other.store.close()
    assert claimed is not None and claimed.stream_id == first.json()["id"]

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{api.runtime.settings.database_schema}".nome_idempotency '
            "SET created_at = now() - interval '25 hours'"
        )
    later = await api.client.post("/v1/threads", json=body, headers=with_key(key, "r"))

    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]


def _sha_of(api: Api, key: str, idem: str) -> str:
    """The claim's key, as the API makes it from the caller's key id and the header."""
    principal = api.runtime.redis_sync.get(
        api.runtime.read_models.keys.by_hash(hashlib.sha256(key.encode()).hexdigest())
    )
    assert principal is not None
    key_id = msgspec.json.decode(principal)["key_id"]
    return hashlib.sha256(f"{key_id}\n{idem}".encode()).hexdigest()
