"""Streams (API.md §3): live SSE equals replay byte for byte, resumption, NDJSON replay, and
the tenant's workspace stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from litestar.testing import AsyncTestClient
from litestar.testing import transport as litestar_transport

from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.api_runs import (
    MATH_INPUT,
    finish,
    finished_run,
    frames,
    new_thread,
    position,
    start_run,
    without_comments,
)
from tests.support.errors import assert_error

# A bound on how long one frame may take to arrive, so a broken stream fails instead of
# hanging the suite. Not a timing assertion: frames normally arrive in milliseconds.
FRAME_TIMEOUT_S = 10.0


class _LiveBody(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes], close: Any) -> None:
        self._chunks = chunks
        self._close = close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._close()


class LiveTransport(httpx.AsyncBaseTransport):
    """Hands over a response's body while the app is still sending it.

    The test client's own transport returns a response only once the app has finished it,
    so an endless stream (the workspace stream) would never return. This one runs the app on
    the test client's portal, passes each chunk on as it is sent, and closing the response
    disconnects, as a browser closing its EventSource does.
    """

    def __init__(self, client: AsyncTestClient[Any]) -> None:
        self.client = client
        self.scopes = litestar_transport.TestClientTransport(client)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        portal = self.client.blocking_portal
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        disconnected = portal.call(anyio.Event)
        body = await request.aread()
        scope = self.scopes.parse_request(request)
        scope.update(method=request.method, http_version="1.1", extensions={})
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, message)

        done = portal.start_task_soon(self.client.app, scope, receive, send)
        done.add_done_callback(
            lambda _: loop.call_soon_threadsafe(inbox.put_nowait, {"type": "done"})
        )
        start = await asyncio.wait_for(inbox.get(), FRAME_TIMEOUT_S)
        if start["type"] == "done":
            done.result()  # raises what the app raised
            raise AssertionError("the app ended without answering")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await inbox.get()
                if message["type"] != "http.response.body":
                    return
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        async def close() -> None:
            portal.call(disconnected.set)
            await asyncio.wait_for(asyncio.wrap_future(done), FRAME_TIMEOUT_S)

        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_LiveBody(chunks(), close),
            request=request,
        )


def live_client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LiveTransport(api.client), base_url=api.client.base_url)


async def read_frames(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """The first `count` SSE frames (heartbeat comments skipped), then stop reading.

    Frames that piled up go out in one chunk, so the last chunk read may hold more: they
    are dropped, as by a client that stops there and later resumes from the last id it
    handled."""
    got: list[dict[str, Any]] = []
    buffer = b""
    chunks = response.aiter_bytes()
    while len(got) < count:
        buffer += await asyncio.wait_for(anext(chunks), FRAME_TIMEOUT_S)
        while b"\n\n" in buffer and len(got) < count:
            block, buffer = buffer.split(b"\n\n", 1)
            got += frames(block + b"\n\n")
    return got


def tenant_positions(api: Api, tenant: str, upto: int | None = None) -> list[int]:
    """Positions of one tenant's events, straight from the log (the stream's ground truth)."""
    tenant_id = tenant_id_for(tenant)
    return [
        row.position
        for row in api.runtime.store.read(0, 100_000, upto=upto)
        if json.loads(row.state)["tenant_id"] == tenant_id
    ]


async def chat_stream(api: Api, key: str, text: str) -> httpx.Response:
    response = await api.client.post("/v1/chat/stream", json={"input": text}, headers=auth(key))
    assert response.status_code == 200, response.text
    return response


# -- live equals replay -------------------------------------------------------------------


async def test_the_replay_of_a_run_is_byte_identical_to_its_live_stream(api: Api) -> None:
    key = await api.key()
    live = await chat_stream(api, key, MATH_INPUT)
    assert live.headers["content-type"].startswith("text/event-stream")
    recorded = without_comments(live.content)
    streamed = frames(recorded)
    run_id = streamed[0]["data"]["run_id"]
    assert live.headers["x-nome-run-id"] == run_id
    assert [f["event"] for f in streamed][:5] == [
        "run.created",
        "run.started",
        "tool.called",
        "tool.started",
        "tool.completed",
    ]
    assert streamed[-1]["event"] == "run.completed"
    assert [f["id"] for f in streamed] == list(range(1, len(streamed) + 1))
    assert all(f["id"] == f["data"]["seq"] and f["event"] == f["data"]["type"] for f in streamed)
    # The position of the command's whole commit: the run, its thread and its account.
    assert int(live.headers["x-nome-position"]) > streamed[0]["data"]["position"]
    for _ in range(2):
        replay = await api.client.get(f"/v1/runs/{run_id}/replay", headers=auth(key))
        assert replay.status_code == 200
        assert replay.headers["content-type"].startswith("text/event-stream")
        assert replay.content == recorded
    again = await api.client.get(f"/v1/runs/{run_id}/stream", headers=auth(key))
    assert without_comments(again.content) == recorded


async def test_replay_as_ndjson_is_one_envelope_per_line_equal_to_the_sse_data(
    api: Api,
) -> None:
    key = await api.key()
    run, _ = await finished_run(api, key)
    sse = await api.client.get(f"/v1/runs/{run['id']}/replay", headers=auth(key))
    data_lines = [
        line[len(b"data: ") :] for line in sse.content.split(b"\n") if line.startswith(b"data: ")
    ]
    by_query = await api.client.get(
        f"/v1/runs/{run['id']}/replay", params={"format": "ndjson"}, headers=auth(key)
    )
    by_accept = await api.client.get(
        f"/v1/runs/{run['id']}/replay", headers=auth(key, Accept="application/x-ndjson")
    )
    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.content.endswith(b"\n")
        assert response.content.split(b"\n")[:-1] == data_lines
    assert [json.loads(line)["seq"] for line in data_lines] == list(range(1, len(data_lines) + 1))
    explicit_sse = await api.client.get(
        f"/v1/runs/{run['id']}/replay",
        params={"format": "sse"},
        headers=auth(key, Accept="application/x-ndjson"),
    )
    assert explicit_sse.content == sse.content
    bad = await api.client.get(
        f"/v1/runs/{run['id']}/replay", params={"format": "xml"}, headers=auth(key)
    )
    assert_error(bad, 400, "bad_request")


# -- resuming -----------------------------------------------------------------------------


async def test_resuming_a_finished_run_from_any_seq_gives_exactly_the_rest(api: Api) -> None:
    key = await api.key()
    run, _ = await finished_run(api, key)
    full = frames((await api.client.get(f"/v1/runs/{run['id']}/replay", headers=auth(key))).content)
    count = len(full)
    for after in range(count + 1):
        by_header = await api.client.get(
            f"/v1/runs/{run['id']}/stream", headers=auth(key, **{"Last-Event-ID": str(after)})
        )
        by_query = await api.client.get(
            f"/v1/runs/{run['id']}/stream", params={"after": after}, headers=auth(key)
        )
        for response in (by_header, by_query):
            assert response.status_code == 200
            rest = frames(response.content)
            assert [f["id"] for f in rest] == list(range(after + 1, count + 1))
            assert [f["raw"] for f in rest] == [f["raw"] for f in full[after:]]
    beyond = await api.client.get(
        f"/v1/runs/{run['id']}/stream", headers=auth(key, **{"Last-Event-ID": str(count + 5)})
    )
    assert beyond.status_code == 200 and frames(beyond.content) == []


async def test_a_malformed_last_event_id_or_after_is_400(api: Api) -> None:
    key = await api.key()
    run, _ = await finished_run(api, key, "short")
    for bad in ["abc", "-1", "1.5", " 2", "0x1"]:
        by_header = await api.client.get(
            f"/v1/runs/{run['id']}/stream", headers=auth(key, **{"Last-Event-ID": bad})
        )
        assert_error(by_header, 400, "bad_request")
        by_query = await api.client.get(
            f"/v1/runs/{run['id']}/stream", params={"after": bad}, headers=auth(key)
        )
        assert_error(by_query, 400, "bad_request")
        workspace = await api.client.get("/v1/events", headers=auth(key, **{"Last-Event-ID": bad}))
        assert_error(workspace, 400, "bad_request")


async def test_a_client_that_drops_mid_run_and_resumes_misses_and_repeats_nothing(
    api: Api,
) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    run = await start_run(api, key, thread_id, MATH_INPUT)
    async with (
        live_client(api) as client,
        client.stream("GET", f"/v1/runs/{run['id']}/stream", headers=auth(key)) as live,
    ):
        assert live.status_code == 200
        head = await read_frames(live, 2)
    assert [f["id"] for f in head] == [1, 2]
    rest = await api.client.get(
        f"/v1/runs/{run['id']}/stream", headers=auth(key, **{"Last-Event-ID": "2"})
    )
    replay = await api.client.get(f"/v1/runs/{run['id']}/replay", headers=auth(key))
    resumed = b"".join(f["raw"] for f in head) + without_comments(rest.content)
    assert resumed == replay.content
    assert frames(replay.content)[-1]["event"] == "run.completed"


async def test_two_clients_streaming_one_run_see_the_same_bytes(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    run = await start_run(api, key, thread_id, MATH_INPUT)
    path = f"/v1/runs/{run['id']}/stream"
    async with (
        live_client(api) as client,
        client.stream("GET", path, headers=auth(key)) as one,
        client.stream("GET", path, headers=auth(key)) as two,
    ):
        first = [f["raw"] for f in await read_frames(one, 3)]
        second = [f["raw"] for f in await read_frames(two, 3)]
    assert first == second
    events = await finish(api, key, run["id"])
    assert [json.loads(raw.split(b"data: ", 1)[1]) for raw in first] == events[:3]


# -- the workspace stream -----------------------------------------------------------------


async def test_the_workspace_stream_carries_only_the_callers_tenant_by_position(
    api: Api,
) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    acme_thread = await new_thread(api, acme, "acme work")
    await new_thread(api, globex, "globex work")
    run, _ = await finished_run(api, acme, "hello", thread_id=acme_thread)
    await finished_run(api, globex, "hola")
    last = await api.client.post("/v1/threads", json={"title": "acme last"}, headers=auth(acme))
    await new_thread(api, globex, "globex after")
    acme_id = tenant_id_for("acme")
    expected = tenant_positions(api, "acme", upto=position(last))
    async with (
        live_client(api) as client,
        client.stream("GET", "/v1/events", headers=auth(acme)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = await read_frames(response, len(expected))
    assert [f["id"] for f in got] == expected
    assert all(f["id"] == f["data"]["position"] for f in got)
    assert {f["data"]["tenant_id"] for f in got} == {acme_id}
    assert all(f["event"] == f["data"]["type"] for f in got)
    types = [f["event"] for f in got]
    assert "thread.created" in types and "run.created" in types and "run.completed" in types
    created = [f for f in got if f["event"] == "thread.created"]
    assert created[-1]["data"]["data"]["title"] == "acme last"
    assert {f["data"]["run_id"] for f in got if f["event"].startswith("run.")} == {run["id"]}


async def test_the_workspace_stream_resumes_after_last_event_id_and_goes_on_live(
    api: Api,
) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    for title in ["one", "two", "three"]:
        await new_thread(api, acme, title)
    async with live_client(api) as client:
        async with client.stream("GET", "/v1/events", headers=auth(acme)) as response:
            everything = await read_frames(response, len(tenant_positions(api, "acme")))
        # Each thread's commit ends with the tenant's quota counting it.
        created = [f for f in everything if f["event"] == "thread.created"]
        assert [f["data"]["data"]["title"] for f in created[-3:]] == ["one", "two", "three"]
        # Resume just after thread "one"'s commit: "two" and "three" follow, two events each.
        after_one = everything.index(created[-2]) - 1
        middle = everything[after_one]["id"]
        for headers in [{"Last-Event-ID": str(middle)}, {}]:
            params = {} if headers else {"after": middle}
            async with client.stream(
                "GET", "/v1/events", params=params, headers=auth(acme, **headers)
            ) as resumed:
                rest = await read_frames(resumed, 4)
            assert [f["raw"] for f in rest] == [f["raw"] for f in everything[-4:]]
        tail = {"Last-Event-ID": str(everything[-1]["id"])}
        async with client.stream("GET", "/v1/events", headers=auth(acme, **tail)) as live:
            await new_thread(api, globex, "not for acme")
            await new_thread(api, acme, "four")
            fresh, _ = await read_frames(live, 2)
    assert fresh["event"] == "thread.created" and fresh["data"]["data"]["title"] == "four"
    assert fresh["id"] > everything[-1]["id"]


async def test_the_workspace_stream_needs_a_key(api: Api) -> None:
    response = await api.client.get("/v1/events")
    assert_error(response, 401, "unauthorized")
