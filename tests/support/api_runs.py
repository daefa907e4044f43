"""Runs over the in-process API, shared by the run, streaming and agent tests: a thread and
a run posted, the run's stream read to its end, its SSE frames."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.support.api import Api, auth

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MATH = '/tool math.evaluate {"expression": "6*7"}'
MATH_INPUT = MATH + "\nwhat is six times seven"
ZERO = "00000000-0000-4000-8000-000000000000"


def position(response: httpx.Response) -> int:
    return int(response.headers["x-nome-position"])


def frames(body: bytes) -> list[dict[str, Any]]:
    """The SSE frames of a body as {"id", "event", "data", "raw"}; comment frames dropped."""
    out: list[dict[str, Any]] = []
    for block in body.split(b"\n\n"):
        lines = [line for line in block.split(b"\n") if line and not line.startswith(b":")]
        if not lines:
            continue
        fields = dict(line.decode().split(": ", 1) for line in lines)
        assert set(fields) == {"id", "event", "data"}, block
        out.append(
            {
                "id": int(fields["id"]),
                "event": fields["event"],
                "data": json.loads(fields["data"]),
                "raw": block + b"\n\n",
            }
        )
    return out


def without_comments(body: bytes) -> bytes:
    """The stream's frames, heartbeat comments dropped (how live and replay are compared)."""
    return b"".join(frame["raw"] for frame in frames(body))


async def new_thread(api: Api, key: str, title: str = "") -> str:
    response = await api.client.post("/v1/threads", json={"title": title}, headers=auth(key))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def post_run(api: Api, key: str, thread_id: str, text: str, **extra: Any) -> httpx.Response:
    body = {"thread_id": thread_id, "input": text, **extra}
    return await api.client.post("/v1/runs", json=body, headers=auth(key))


async def start_run(api: Api, key: str, thread_id: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await post_run(api, key, thread_id, text, **extra)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def finish(api: Api, key: str, run_id: str) -> list[dict[str, Any]]:
    """Wait for a run to end by reading its stream (it closes at the terminal event)."""
    response = await api.client.get(f"/v1/runs/{run_id}/stream", headers=auth(key))
    assert response.status_code == 200, response.text
    envelopes = [frame["data"] for frame in frames(response.content)]
    assert envelopes[-1]["type"] in ("run.completed", "run.failed", "run.cancelled")
    return envelopes


async def read_run(api: Api, key: str, run_id: str, at: int) -> dict[str, Any]:
    """GET /v1/runs/{id} once the read model has reached log position `at`."""
    response = await api.client.get(
        f"/v1/runs/{run_id}", headers=auth(key, **{"X-Nome-Min-Position": str(at)})
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def finished_run(
    api: Api, key: str, text: str = MATH_INPUT, thread_id: str | None = None, **extra: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run that has ended, as GET /v1/runs/{id} shows it, and its events."""
    thread_id = thread_id or await new_thread(api, key)
    run = await start_run(api, key, thread_id, text, **extra)
    events = await finish(api, key, run["id"])
    return await read_run(api, key, run["id"], events[-1]["position"]), events
