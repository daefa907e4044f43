"""Call the app as a server would, for what the test client can't do.

Litestar's test client reports its client as `testclient` and collects a whole response body
in memory before it returns. These helpers send one request straight to the ASGI app (on the
test client's own event loop, where the runtime lives), from any client address, and hand
each body chunk to a callback as it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.api import Api


class Answer:
    """Status, headers and (unless streamed to a callback) the body of one response."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.chunks = 0


def call_app(
    api: Api,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    on_body: Callable[[bytes], None] | None = None,
) -> Answer:
    """GET `path` from `client`; with `on_body`, every chunk goes there and is not kept."""
    answer = Answer()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": client,
        "server": ("testserver", 80),
        "extensions": {},
    }

    async def run() -> None:
        done = asyncio.Event()
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # the client stays connected until the response ends
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = {
                    k.decode().lower(): v.decode() for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    answer.chunks += 1
                    if on_body is not None:
                        on_body(chunk)
                    else:
                        answer.body += chunk
                if not message.get("more_body", False):
                    done.set()

        await api.client.app(scope, receive, send)  # type: ignore[attr-defined]

    api.client.blocking_portal.call(run)  # type: ignore[attr-defined]
    return answer
