"""Idempotency-Key on creating POSTs (API.md §0): a retry gets the first answer, once."""

from __future__ import annotations

from tests.support.api import Api, auth
from tests.support.errors import assert_error


def with_key(key: str, idempotency_key: str) -> dict[str, str]:
    return auth(key, **{"Idempotency-Key": idempotency_key})


async def test_a_retried_thread_creation_returns_the_first_response_and_creates_one(
    api: Api,
) -> None:
    key = await api.key()
    body = {"title": "once", "metadata": {"k": "v"}}
    first = await api.client.post("/v1/threads", json=body, headers=with_key(key, "create-1"))
    assert first.status_code == 201
    head = api.runtime.store.head()
    again = await api.client.post("/v1/threads", json=body, headers=with_key(key, "create-1"))
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["x-nome-position"] == first.headers["x-nome-position"]
    assert again.headers["content-type"].split(";")[0] == "application/json"
    assert api.runtime.store.head() == head

    await api.settle()
    listed = (await api.client.get("/v1/threads", headers=auth(key))).json()
    assert listed["total_count"] == 1
    assert [t["id"] for t in listed["data"]] == [first.json()["id"]]


async def test_a_retried_message_is_appended_once(api: Api) -> None:
    key = await api.key()
    thread = (await api.client.post("/v1/threads", json={}, headers=auth(key))).json()
    path = f"/v1/threads/{thread['id']}/messages"
    first = await api.client.post(path, json={"content": "hi"}, headers=with_key(key, "m-1"))
    again = await api.client.post(path, json={"content": "hi"}, headers=with_key(key, "m-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()

    other = await api.client.post(path, json={"content": "hi"}, headers=with_key(key, "m-2"))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]

    at = other.headers["x-nome-position"]
    read = auth(key, **{"X-Nome-Min-Position": at})
    messages = (await api.client.get(path, headers=read)).json()
    assert [m["id"] for m in messages["data"]] == [first.json()["id"], other.json()["id"]]
    assert messages["total_count"] == 2
    got = (await api.client.get(f"/v1/threads/{thread['id']}", headers=read)).json()
    assert got["message_count"] == 2


async def test_a_retried_key_creation_returns_the_same_key_once(api: Api) -> None:
    admin = await api.key()
    body = {"name": "deploy", "roles": ["viewer"]}
    first = await api.client.post("/v1/admin/keys", json=body, headers=with_key(admin, "k-1"))
    again = await api.client.post("/v1/admin/keys", json=body, headers=with_key(admin, "k-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    keys = (await api.client.get("/v1/admin/keys", headers=auth(admin))).json()
    assert [k["name"] for k in keys["data"]].count("deploy") == 1


async def test_the_same_key_with_a_different_body_is_409_idempotency_mismatch(api: Api) -> None:
    key = await api.key()
    first = await api.client.post(
        "/v1/threads", json={"title": "a"}, headers=with_key(key, "reused")
    )
    assert first.status_code == 201
    head = api.runtime.store.head()
    mismatch = await api.client.post(
        "/v1/threads", json={"title": "b"}, headers=with_key(key, "reused")
    )
    assert_error(mismatch, 409, "idempotency_mismatch")
    thread_id = first.json()["id"]
    elsewhere = await api.client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"content": "x"},
        headers=with_key(key, "reused"),
    )
    assert_error(elsewhere, 409, "idempotency_mismatch")
    assert api.runtime.store.head() == head


async def test_an_idempotency_key_over_255_characters_is_400(api: Api) -> None:
    key = await api.key()
    head = api.runtime.store.head()
    response = await api.client.post(
        "/v1/threads", json={"title": "x"}, headers=with_key(key, "k" * 256)
    )
    assert_error(response, 400, "bad_request")
    assert api.runtime.store.head() == head
    longest = await api.client.post(
        "/v1/threads", json={"title": "x"}, headers=with_key(key, "k" * 255)
    )
    assert longest.status_code == 201


async def test_idempotency_keys_of_one_tenant_never_answer_another(api: Api) -> None:
    acme = await api.key("acme")
    globex = await api.key("globex")
    body = {"title": "same body"}
    mine = await api.client.post("/v1/threads", json=body, headers=with_key(acme, "shared"))
    theirs = await api.client.post("/v1/threads", json=body, headers=with_key(globex, "shared"))
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    await api.settle()
    listed = (await api.client.get("/v1/threads", headers=auth(globex))).json()
    assert [t["id"] for t in listed["data"]] == [theirs.json()["id"]]


async def test_a_failed_request_does_not_use_up_its_idempotency_key(api: Api) -> None:
    key = await api.key()
    missing = "/v1/threads/00000000-0000-4000-8000-000000000000/messages"
    failed = await api.client.post(missing, json={"content": "x"}, headers=with_key(key, "f-1"))
    assert_error(failed, 404, "not_found")
    # The same key on the same (still failing) request is tried again, not replayed as success.
    retried = await api.client.post(missing, json={"content": "x"}, headers=with_key(key, "f-1"))
    assert_error(retried, 404, "not_found")
