"""Runs and approvals over the in-process API, shared by the approval and tool tests: an app
on changed settings, a run started and waited for, its events, and a live SSE stream.

The test client runs the app on a loop of its own and buffers each whole response, blocking
the test's loop meanwhile. `LiveStream` gets around that: it reads an SSE response frame by
frame on the app's loop while the test goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from litestar.testing import AsyncTestClient

from nome_api.app import create_app
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from tests.support.api import Api, auth

# A safety bound for things the system must do on its own; nothing asserts how long they take.
EVENTUALLY_S = 20.0


@asynccontextmanager
async def running(settings: Settings, **changes: Any) -> AsyncIterator[Api]:
    """An app on these settings with some changed, run like the `api` fixture's."""
    runtime = Runtime(msgspec.structs.replace(settings, **changes))
    async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
        yield Api(client, runtime)


def body(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, *, limit: float = EVENTUALLY_S
) -> Any:
    """Await `probe()` until it returns something truthy; the limit only stops a hang."""
    deadline = time.monotonic() + limit
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def set_policy(api: Api, admin: str, tool: str, **policy: Any) -> dict[str, Any]:
    response = await api.client.put(f"/v1/tools/policies/{tool}", json=policy, headers=auth(admin))
    return body(response)


async def new_thread(api: Api, key: str) -> str:
    response = await api.client.post("/v1/threads", json={"title": "t"}, headers=auth(key))
    return body(response, 201)["id"]


async def start_run(api: Api, key: str, text: str, thread_id: str | None = None) -> dict[str, Any]:
    thread_id = thread_id or await new_thread(api, key)
    response = await api.client.post(
        "/v1/runs", json={"thread_id": thread_id, "input": text}, headers=auth(key)
    )
    run = body(response, 201)
    # Read our own write: later probes of the run may go to its read model at once.
    await api.settle(int(response.headers["x-nome-position"]))
    return run


async def get_run(api: Api, key: str, run_id: str) -> dict[str, Any]:
    return body(await api.client.get(f"/v1/runs/{run_id}", headers=auth(key)))


async def wait_for_run(
    api: Api, key: str, run_id: str, status: str = "completed"
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        run = await get_run(api, key, run_id)
        assert run["status"] in ("pending", "active", status), run
        return run if run["status"] == status else None

    return await eventually(probe, f"run {run_id} to be {status}")


async def run_events(api: Api, key: str, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run from GET /v1/runs/{id}/events, following the cursor."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = body(
            await api.client.get(f"/v1/runs/{run_id}/events", params=params, headers=auth(key))
        )
        events += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            return events
    raise AssertionError("the event pages did not end")


def of_type(events: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def output_of(events: Sequence[dict[str, Any]]) -> str:
    (completed,) = of_type(events, "run.completed")
    return completed["data"]["output"]


class LiveStream:
    """An SSE response read as it is sent, on the app's loop, while the test goes on."""

    def __init__(self, api: Api, path: str, key: str) -> None:
        self.api = api
        self.path = path
        self.key = key
        self.status: int | None = None
        self.body = b""
        self.ended = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._disconnect: asyncio.Event | None = None
        self._future: Future[None] | None = None

    async def __aenter__(self) -> LiveStream:
        self._future = self.api.client.blocking_portal.start_task_soon(self._serve)
        return self

    async def __aexit__(self, *_: object) -> None:
        # Never leave the request running: the test client would wait for it forever.
        await self.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._disconnect = asyncio.Event()
        url = urlsplit(self.path)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": url.path,
            "raw_path": url.path.encode(),
            "root_path": "",
            "query_string": url.query.encode(),
            "headers": [
                (b"host", b"testserver.local"),
                (b"authorization", f"Bearer {self.key}".encode()),
                (b"accept", b"text/event-stream"),
            ],
            "client": ("testclient", 50000),
            "server": ("testserver.local", 80),
            "extensions": {},
        }
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            assert self._disconnect is not None
            await self._disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")
                if not message.get("more_body", False):
                    self.ended = True
                    # As a server does: once the response is complete, the client is gone.
                    assert self._disconnect is not None
                    self._disconnect.set()

        await self.api.client.app(scope, receive, send)

    async def until(self, needle: bytes, what: str) -> None:
        async def probe() -> bool:
            assert self._future is not None
            if self._future.done():
                self._future.result()  # surfaces an exception in the app
            return needle in self.body

        await eventually(probe, what)

    async def finished(self) -> bytes:
        """The whole body, once the server ended it (a run stream ends at the run's end)."""
        assert self._future is not None
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._future)), EVENTUALLY_S)
        except TimeoutError:
            raise AssertionError(f"the stream never ended: {self.body[-500:]!r}") from None
        assert self.ended and self.status == 200, (self.status, self.body[-500:])
        return self.body

    async def close(self) -> bytes:
        """Hang up (for endless streams) and return what arrived."""
        if self._loop is not None and self._disconnect is not None:
            self._loop.call_soon_threadsafe(self._disconnect.set)
        if self._future is not None:
            await asyncio.wait_for(asyncio.wrap_future(self._future), EVENTUALLY_S)
        return self.body
