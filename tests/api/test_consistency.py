"""Read-your-writes through log positions, and cursors that hold still under inserts (API.md §0)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar.testing import AsyncTestClient

from nome_api.app import create_app
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.errors import assert_error


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    """An app on these settings, started and stopped like the `api` fixture's."""
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
        yield Api(client, runtime)


def at(key: str, position: int | str) -> dict[str, str]:
    return auth(key, **{"X-Nome-Min-Position": str(position)})


async def test_every_command_answers_with_the_log_position_it_reached(api: Api) -> None:
    admin = await api.key()
    seen: list[int] = []
    created = await api.client.post("/v1/threads", json={"title": "a"}, headers=auth(admin))
    thread = f"/v1/threads/{created.json()['id']}"
    responses = [
        created,
        await api.client.patch(thread, json={"title": "b"}, headers=auth(admin)),
        await api.client.post(thread + "/messages", json={"content": "c"}, headers=auth(admin)),
        await api.client.post(
            "/v1/admin/keys", json={"name": "k", "roles": ["viewer"]}, headers=auth(admin)
        ),
    ]
    key_id = responses[-1].json()["id"]
    responses.append(await api.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(admin)))
    responses.append(await api.client.delete(thread, headers=auth(admin)))
    for response in responses:
        assert response.status_code in (200, 201, 204), response.text
        seen.append(int(response.headers["x-nome-position"]))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == api.runtime.store.head()


async def test_a_read_with_min_position_sees_the_write_that_returned_it(api: Api) -> None:
    key = await api.key()
    for i in range(5):
        created = await api.client.post("/v1/threads", json={"title": f"t{i}"}, headers=auth(key))
        position = created.headers["x-nome-position"]
        thread_id = created.json()["id"]
        got = await api.client.get(f"/v1/threads/{thread_id}", headers=at(key, position))
        assert got.status_code == 200 and got.json() == created.json()

        renamed = await api.client.patch(
            f"/v1/threads/{thread_id}", json={"title": f"r{i}"}, headers=auth(key)
        )
        got = await api.client.get(
            f"/v1/threads/{thread_id}", headers=at(key, renamed.headers["x-nome-position"])
        )
        assert got.json()["title"] == f"r{i}"

        message = await api.client.post(
            f"/v1/threads/{thread_id}/messages", json={"content": "m"}, headers=auth(key)
        )
        listed = await api.client.get(
            f"/v1/threads/{thread_id}/messages",
            headers=at(key, message.headers["x-nome-position"]),
        )
        assert [m["id"] for m in listed.json()["data"]] == [message.json()["id"]]


async def test_a_min_position_beyond_the_head_is_503_with_retry_after(
    settings: Settings,
) -> None:
    async with running(msgspec.structs.replace(settings, min_position_wait_s=0.2)) as api:
        key = await api.key()
        head = api.runtime.store.head()
        for path in ["/v1/threads", "/v1/bootstrap"]:
            response = await api.client.get(path, headers=at(key, head + 1_000_000))
            assert_error(response, 503, "unavailable")
            assert int(response.headers["retry-after"]) >= 1
        assert (await api.client.get("/v1/threads", headers=at(key, head))).status_code == 200


async def test_a_malformed_min_position_is_400(api: Api) -> None:
    key = await api.key()
    for value in ["abc", "-1", "1.5", "", "0x10"]:
        response = await api.client.get("/v1/threads", headers=at(key, value))
        assert_error(response, 400, "bad_request")
    assert (await api.client.get("/v1/threads", headers=at(key, 0))).status_code == 200


async def test_paging_while_threads_are_created_skips_and_repeats_nothing(api: Api) -> None:
    key = await api.key()
    existing: list[str] = []
    for i in range(33):
        created = await api.client.post(
            "/v1/threads", json={"title": f"old {i}"}, headers=auth(key)
        )
        existing.append(created.json()["id"])
    positions = [int(created.headers["x-nome-position"])]
    inserted: list[str] = []
    stop = asyncio.Event()
    # The walker hands out permits, so inserts interleave with its pages at a bounded rate.
    permits = asyncio.Semaphore(0)
    progress = asyncio.Condition()

    async def keep_creating(writer: int) -> None:
        n = 0
        while True:
            await permits.acquire()
            if stop.is_set():
                return
            response = await api.client.post(
                "/v1/threads", json={"title": f"new {writer}.{n}"}, headers=auth(key)
            )
            assert response.status_code == 201, response.text
            inserted.append(response.json()["id"])
            positions.append(int(response.headers["x-nome-position"]))
            n += 1
            async with progress:
                progress.notify_all()

    writers = [asyncio.create_task(keep_creating(w)) for w in range(2)]
    seen: list[str] = []
    totals: list[int] = []
    try:
        cursor: str | None = None
        for _ in range(50):
            # Let a few inserts land between every two pages, and make the page see them.
            target = len(inserted) + 3
            for _ in range(3):
                permits.release()
            async with asyncio.timeout(30), progress:
                await progress.wait_for(lambda goal=target: len(inserted) >= goal)
            params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            response = await api.client.get(
                "/v1/threads", params=params, headers=at(key, max(positions))
            )
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["data"]) <= 7
            seen += [t["id"] for t in page["data"]]
            totals.append(page["total_count"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        else:
            raise AssertionError("the walk did not end")
    finally:
        stop.set()
        for _ in writers:
            permits.release()
        await asyncio.gather(*writers)

    duplicates = [i for i, n in Counter(seen).items() if n > 1]
    assert duplicates == []
    counts = Counter(seen)
    assert [counts[thread_id] for thread_id in existing] == [1] * len(existing)
    # The inserts really happened during the walk and were visible to it.
    assert len(totals) >= 5 and len(inserted) >= 3 * len(totals)
    assert totals == sorted(totals) and totals[-1] > totals[0] > len(existing)
    assert totals[-1] == len(existing) + len(inserted)
