"""Threads and messages over HTTP (API.md §2), tenancy included."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.support.api import Api, auth
from tests.support.errors import assert_error

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
THREAD_KEYS = {
    "id",
    "title",
    "metadata",
    "created_at",
    "updated_at",
    "message_count",
    "last_run_id",
    "active_run_id",
}
MESSAGE_KEYS = {"id", "thread_id", "role", "content", "created_at", "metadata"}
CLIENT = {
    "X-Nome-Client-Surface": "desktop",
    "X-Nome-Client-Version": "1.4.2",
    "X-Nome-Client-Revision": "9f3c2ab",
}


def position(response: httpx.Response) -> int:
    return int(response.headers["x-nome-position"])


async def create(api: Api, key: str, **body: Any) -> tuple[dict[str, Any], int]:
    response = await api.client.post("/v1/threads", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json(), position(response)


async def post_message(
    api: Api, key: str, thread_id: str, content: str, **extra: Any
) -> httpx.Response:
    headers = auth(key, **extra.pop("headers", {}))
    return await api.client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"content": content, **extra},
        headers=headers,
    )


async def get(api: Api, key: str, path: str, at: int, **params: Any) -> httpx.Response:
    """A read that waits for the write at log position `at` (read-your-writes)."""
    return await api.client.get(
        path, params=params, headers=auth(key, **{"X-Nome-Min-Position": str(at)})
    )


async def walk(api: Api, key: str, path: str, at: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await get(api, key, path, at, **query)).json()
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk did not end")


# -- lifecycle ----------------------------------------------------------------------------


async def test_creating_a_thread_answers_201_with_the_thread_and_its_log_position(
    api: Api,
) -> None:
    key = await api.key()
    response = await api.client.post(
        "/v1/threads",
        json={"title": "Trip plans", "metadata": {"project": "alps"}},
        headers=auth(key),
    )
    assert response.status_code == 201
    assert response.headers["content-type"].split(";")[0] == "application/json"
    thread = response.json()
    assert set(thread) == THREAD_KEYS
    assert UUID.match(thread["id"])
    assert thread["title"] == "Trip plans"
    assert thread["metadata"] == {"project": "alps"}
    assert TIME.match(thread["created_at"]) and thread["updated_at"] == thread["created_at"]
    assert thread["message_count"] == 0
    assert thread["last_run_id"] is None and thread["active_run_id"] is None
    assert position(response) >= 1
    assert position(response) == api.runtime.store.head()


async def test_a_thread_without_title_or_metadata_gets_empty_ones(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    assert thread["title"] == "" and thread["metadata"] == {}


async def test_a_created_thread_reads_back_the_same_by_id(api: Api) -> None:
    key = await api.key()
    thread, at = await create(api, key, title="Read me", metadata={"a": "b"})
    response = await get(api, key, f"/v1/threads/{thread['id']}", at)
    assert response.status_code == 200
    assert response.json() == thread


async def test_threads_are_listed_most_recently_updated_first(api: Api) -> None:
    key = await api.key()
    first, _ = await create(api, key, title="first")
    second, _ = await create(api, key, title="second")
    third, at = await create(api, key, title="third")
    page = (await get(api, key, "/v1/threads", at)).json()
    assert [t["id"] for t in page["data"]] == [third["id"], second["id"], first["id"]]
    assert page["total_count"] == 3 and page["next_cursor"] is None

    renamed = await api.client.patch(
        f"/v1/threads/{first['id']}", json={"title": "first, renamed"}, headers=auth(key)
    )
    page = (await get(api, key, "/v1/threads", position(renamed))).json()
    assert [t["id"] for t in page["data"]] == [first["id"], third["id"], second["id"]]

    message = await post_message(api, key, second["id"], "bump")
    page = (await get(api, key, "/v1/threads", position(message))).json()
    assert [t["id"] for t in page["data"]] == [second["id"], first["id"], third["id"]]
    assert page["total_count"] == 3


async def test_the_thread_list_pages_with_a_cursor_in_order(api: Api) -> None:
    key = await api.key()
    created = [await create(api, key, title=f"t{i}") for i in range(5)]
    at = created[-1][1]
    first = (await get(api, key, "/v1/threads", at, limit=2)).json()
    assert len(first["data"]) == 2 and first["total_count"] == 5
    assert first["next_cursor"] is not None
    everything = await walk(api, key, "/v1/threads", at, limit=2)
    assert [t["title"] for t in everything] == ["t4", "t3", "t2", "t1", "t0"]


async def test_title_search_matches_case_insensitively_and_counts_only_matches(
    api: Api,
) -> None:
    key = await api.key()
    quarterly, _ = await create(api, key, title="Quarterly REPORT")
    await create(api, key, title="Groceries")
    draft, at = await create(api, key, title="report draft")
    page = (await get(api, key, "/v1/threads", at, q="Report")).json()
    assert [t["id"] for t in page["data"]] == [draft["id"], quarterly["id"]]
    assert page["total_count"] == 2 and page["next_cursor"] is None
    nothing = (await get(api, key, "/v1/threads", at, q="zebra")).json()
    assert nothing == {"data": [], "next_cursor": None, "total_count": 0}


async def test_title_search_pages_through_its_matches_with_a_cursor(api: Api) -> None:
    key = await api.key()
    at = 0
    for i in range(5):
        _, at = await create(api, key, title=f"match {i}")
        _, at = await create(api, key, title=f"other {i}")
    first = (await get(api, key, "/v1/threads", at, q="MATCH", limit=2)).json()
    assert first["total_count"] == 5 and first["next_cursor"] is not None
    titles = [t["title"] for t in await walk(api, key, "/v1/threads", at, q="MATCH", limit=2)]
    assert titles == ["match 4", "match 3", "match 2", "match 1", "match 0"]


async def test_renaming_a_thread_changes_its_title_and_update_time(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key, title="old", metadata={"keep": "me"})
    response = await api.client.patch(
        f"/v1/threads/{thread['id']}", json={"title": "new"}, headers=auth(key)
    )
    assert response.status_code == 200
    renamed = response.json()
    assert set(renamed) == THREAD_KEYS
    assert renamed["title"] == "new" and renamed["metadata"] == {"keep": "me"}
    assert renamed["created_at"] == thread["created_at"]
    assert renamed["updated_at"] > thread["updated_at"]
    assert position(response) > 0
    read = await get(api, key, f"/v1/threads/{thread['id']}", position(response))
    assert read.json() == renamed


async def test_a_rename_needs_a_title(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key, title="old")
    response = await api.client.patch(f"/v1/threads/{thread['id']}", json={}, headers=auth(key))
    body = assert_error(response, 422, "validation_failed", issues=True)
    assert body["issues"][0]["message"]


async def test_a_deleted_thread_leaves_every_read_and_every_route(api: Api) -> None:
    key = await api.key()
    keep, _ = await create(api, key, title="keep")
    doomed, _ = await create(api, key, title="doomed")
    message = await post_message(api, key, doomed["id"], "hello")
    assert message.status_code == 201
    response = await api.client.delete(f"/v1/threads/{doomed['id']}", headers=auth(key))
    assert response.status_code == 204
    assert response.content == b""
    at = position(response)
    assert at > position(message)

    path = f"/v1/threads/{doomed['id']}"
    assert_error(await get(api, key, path, at), 404, "not_found")
    assert_error(await get(api, key, path + "/messages", at), 404, "not_found")
    listed = (await get(api, key, "/v1/threads", at)).json()
    assert [t["id"] for t in listed["data"]] == [keep["id"]] and listed["total_count"] == 1
    assert (await get(api, key, "/v1/threads", at, q="doomed")).json()["total_count"] == 0

    for method, json in [("PATCH", {"title": "x"}), ("DELETE", None)]:
        again = await api.client.request(method, path, json=json, headers=auth(key))
        assert_error(again, 404, "not_found")
    assert_error(await post_message(api, key, doomed["id"], "late"), 404, "not_found")


async def test_ids_that_are_not_uuids_name_no_thread(api: Api) -> None:
    key = await api.key()
    for method, path, json in [
        ("GET", "/v1/threads/not-a-uuid", None),
        ("PATCH", "/v1/threads/not-a-uuid", {"title": "x"}),
        ("DELETE", "/v1/threads/not-a-uuid", None),
        ("GET", "/v1/threads/not-a-uuid/messages", None),
        ("POST", "/v1/threads/not-a-uuid/messages", {"content": "x"}),
        ("GET", "/v1/threads/00000000-0000-4000-8000-000000000000", None),
        ("POST", "/v1/threads/00000000-0000-4000-8000-000000000000/messages", {"content": "x"}),
    ]:
        response = await api.client.request(method, path, json=json, headers=auth(key))
        assert_error(response, 404, "not_found")


# -- messages -----------------------------------------------------------------------------


async def test_a_posted_message_has_the_message_shape_and_the_client_build_identity(
    api: Api,
) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    response = await post_message(
        api, key, thread["id"], "Hello there", metadata={"label": "greeting"}, headers=CLIENT
    )
    assert response.status_code == 201
    message = response.json()
    assert set(message) == MESSAGE_KEYS
    assert UUID.match(message["id"])
    assert message["thread_id"] == thread["id"]
    assert message["role"] == "user"
    assert message["content"] == "Hello there"
    assert TIME.match(message["created_at"])
    assert message["metadata"] == {
        "label": "greeting",
        "domain_hints": [],
        "tier": None,
        "tools_invoked": [],
        "episode_id": None,
        "client": {"surface": "desktop", "version": "1.4.2", "revision": "9f3c2ab"},
    }
    listed = await get(api, key, f"/v1/threads/{thread['id']}/messages", position(response))
    assert listed.json()["data"] == [message]


async def test_a_message_without_client_headers_carries_an_empty_client(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    response = await post_message(api, key, thread["id"], "hi", role="system")
    assert response.status_code == 201
    message = response.json()
    assert message["role"] == "system"
    assert message["metadata"]["client"] == {"surface": None, "version": None, "revision": None}


async def test_reserved_message_metadata_keys_are_rejected_and_nothing_is_appended(
    api: Api,
) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    head = api.runtime.store.head()
    for reserved in ["client", "tier", "episode_id", "domain_hints", "tools_invoked"]:
        response = await post_message(
            api, key, thread["id"], "sneaky", metadata={reserved: "x", "fine": "y"}
        )
        body = assert_error(response, 422, "validation_failed", issues=True)
        assert body["issues"][0]["path"] == ["metadata", reserved]
    assert api.runtime.store.head() == head


async def test_messages_are_listed_oldest_first_and_page_with_a_cursor(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    at = 0
    for i in range(5):
        response = await post_message(api, key, thread["id"], f"m{i}")
        assert response.status_code == 201
        at = position(response)
    path = f"/v1/threads/{thread['id']}/messages"
    first = (await get(api, key, path, at, limit=2)).json()
    assert [m["content"] for m in first["data"]] == ["m0", "m1"]
    assert first["total_count"] == 5 and first["next_cursor"] is not None
    second = (await get(api, key, path, at, limit=2, cursor=first["next_cursor"])).json()
    assert [m["content"] for m in second["data"]] == ["m2", "m3"]
    third = (await get(api, key, path, at, limit=2, cursor=second["next_cursor"])).json()
    assert [m["content"] for m in third["data"]] == ["m4"]
    assert third["next_cursor"] is None and third["total_count"] == 5
    everything = (await get(api, key, path, at)).json()
    assert [m["content"] for m in everything["data"]] == [f"m{i}" for i in range(5)]


async def test_each_message_increments_the_threads_message_count(api: Api) -> None:
    key = await api.key()
    thread, _ = await create(api, key)
    for expected in (1, 2, 3):
        response = await post_message(api, key, thread["id"], f"n{expected}")
        read = await get(api, key, f"/v1/threads/{thread['id']}", position(response))
        assert read.json()["message_count"] == expected
        listed = await get(api, key, "/v1/threads", position(response))
        assert listed.json()["data"][0]["message_count"] == expected


# -- tenancy ------------------------------------------------------------------------------


async def test_another_tenants_thread_is_404_on_every_thread_route(api: Api) -> None:
    owner = await api.key("acme")
    stranger = await api.key("globex")
    thread, at = await create(api, owner, title="private")
    await post_message(api, owner, thread["id"], "secret")
    path = f"/v1/threads/{thread['id']}"
    routes: list[tuple[str, str, Any]] = [
        ("GET", path, None),
        ("PATCH", path, {"title": "hijacked"}),
        ("DELETE", path, None),
        ("GET", path + "/messages", None),
        ("POST", path + "/messages", {"content": "injected"}),
    ]
    for method, route, json in routes:
        response = await api.client.request(
            method,
            route,
            json=json,
            headers=auth(stranger, **{"X-Nome-Min-Position": str(at)}),
        )
        body = assert_error(response, 404, "not_found")
        assert body["error"] == "no such thread", (method, route)

    # None of those requests changed anything the owner sees.
    await api.settle()
    unchanged = (await api.client.get(path, headers=auth(owner))).json()
    assert unchanged["title"] == "private" and unchanged["message_count"] == 1
    messages = (await api.client.get(path + "/messages", headers=auth(owner))).json()
    assert [m["content"] for m in messages["data"]] == ["secret"]


async def test_lists_and_searches_never_show_another_tenants_threads(api: Api) -> None:
    acme = await api.key("acme")
    globex = await api.key("globex")
    mine, _ = await create(api, acme, title="shared word acme")
    theirs, at = await create(api, globex, title="shared word globex")
    for key, own in [(acme, mine), (globex, theirs)]:
        listed = (await get(api, key, "/v1/threads", at)).json()
        assert [t["id"] for t in listed["data"]] == [own["id"]] and listed["total_count"] == 1
        found = (await get(api, key, "/v1/threads", at, q="shared")).json()
        assert [t["id"] for t in found["data"]] == [own["id"]] and found["total_count"] == 1
