"""Stream tokens (API.md §12): `POST /v1/stream-tokens` gives a browser's EventSource a token
for one SSE path, valid 60 s, that the gateway accepts as `?stream_token=` in place of the
bearer header; the tenant and role rules stay those of the key that asked for it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from nome_api import stream_tokens
from nome_core.clock import parse_time
from tests.support.api import Api, auth

SSE_TYPE = "text/event-stream"


async def finished_run(api: Api, key: str) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/chat",
        json={"input": '/tool math.evaluate {"expression": "6*7"}\nsix times seven'},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    return response.json()["run"]  # type: ignore[no-any-return]


async def token_for(api: Api, key: str, path: str) -> httpx.Response:
    return await api.client.post("/v1/stream-tokens", json={"path": path}, headers=auth(key))


async def issued(api: Api, key: str, path: str) -> str:
    response = await token_for(api, key, path)
    assert response.status_code == 201, response.text
    return response.json()["token"]  # type: ignore[no-any-return]


async def with_token(api: Api, path: str, token: str) -> httpx.Response:
    """A GET as an EventSource sends it: no Authorization header, the token in the query."""
    return await api.client.get(path, params={"stream_token": token})


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["code"] == "unauthorized" and body["error"] and body["request_id"]


def opening_status(api: Api, path: str, token: str) -> tuple[int, str]:
    """Status and content type with which an endless stream starts answering a tokened GET;
    then the client goes away, as a closed EventSource does."""
    started: dict[str, Any] = {}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": f"stream_token={token}".encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
    }

    async def run() -> None:
        gone = anyio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                started.update(status=message["status"], type=headers[b"content-type"].decode())
                gone.set()

        await api.client.app(scope, receive, send)  # type: ignore[attr-defined]

    api.client.blocking_portal.call(run)  # type: ignore[attr-defined]
    return started["status"], started["type"]


async def test_a_token_opens_its_run_stream_without_a_header_for_sixty_seconds(api: Api) -> None:
    key = await api.key()
    run = await finished_run(api, key)
    path = f"/v1/runs/{run['id']}/stream"
    response = await token_for(api, key, path)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    left = parse_time(body["expires_at"]) - datetime.now(UTC)
    assert 50 < left.total_seconds() <= 60
    assert int(response.headers["x-nome-position"]) >= run["event_count"]
    kept = api.runtime.redis_sync.pttl(
        stream_tokens.redis_key(api.runtime.settings.redis_prefix, body["token"])
    )
    assert 0 < kept <= 60_000

    by_token = await with_token(api, path, body["token"])
    by_header = await api.client.get(path, headers=auth(key))
    assert by_token.status_code == 200
    assert by_token.headers["content-type"].startswith(SSE_TYPE)
    assert by_token.content == by_header.content
    assert b"event: run.completed" in by_token.content
    replayed = await with_token(
        api, f"/v1/runs/{run['id']}/replay", await issued(api, key, f"/v1/runs/{run['id']}/replay")
    )
    assert replayed.status_code == 200 and replayed.content == by_header.content


async def test_the_redis_record_holds_the_tokens_hash_never_the_token(api: Api) -> None:
    key = await api.key()
    token = await issued(api, key, "/v1/events")
    prefix = api.runtime.settings.redis_prefix
    stored = [k.decode() for k in api.runtime.redis_sync.scan_iter(match=f"{prefix}stream-token:*")]
    assert stored == [f"{prefix}stream-token:{hashlib.sha256(token.encode()).hexdigest()}"]
    assert token.encode() not in api.runtime.redis_sync.get(stored[0])


async def test_a_token_is_refused_on_any_path_but_its_own(api: Api) -> None:
    key = await api.key()
    run = await finished_run(api, key)
    token = await issued(api, key, f"/v1/runs/{run['id']}/stream")
    for path in (
        f"/v1/runs/{run['id']}/replay",
        f"/v1/runs/{run['id']}/events",
        f"/v1/runs/{run['id']}",
        "/v1/runs",
        "/v1/bootstrap",
    ):
        assert_unauthorized(await with_token(api, path, token))
    assert opening_status(api, "/v1/events", token)[0] == 401


async def test_a_token_is_never_issued_for_a_path_that_is_not_an_sse_route(api: Api) -> None:
    key = await api.key()
    run_id = "0d6f8a3e-9a51-4d44-9f39-2b1c1a7d5e10"
    for path in (
        "/v1/runs",
        f"/v1/runs/{run_id}",
        f"/v1/runs/{run_id}/events",
        f"/v1/runs/{run_id}/stream?after=3",
        f"/v1/runs/{run_id.upper()}/stream",
        "/v1/runs/not-a-run/stream",
        "/v1/events/",
        "/v1/chat/stream",
        "/v1/audit/export",
        "https://example.com/v1/events",
    ):
        response = await token_for(api, key, path)
        assert response.status_code == 422, path
        body = response.json()
        assert body["code"] == "validation_failed"
        assert body["issues"][0]["path"] == ["path"]
    for bad in ({}, {"path": "/v1/events", "extra": 1}, {"path": 3}):
        response = await api.client.post("/v1/stream-tokens", json=bad, headers=auth(key))
        assert response.status_code == 422, bad


async def test_an_expired_token_is_refused(api: Api) -> None:
    key = await api.key()
    run = await finished_run(api, key)
    path = f"/v1/runs/{run['id']}/stream"
    token = await issued(api, key, path)
    record = stream_tokens.redis_key(api.runtime.settings.redis_prefix, token)
    # Redis keeps a token's time: after its 60 s the record is gone, as it is here.
    assert api.runtime.redis_sync.delete(record) == 1
    assert_unauthorized(await with_token(api, path, token))
    assert_unauthorized(await with_token(api, path, "made-up"))


async def test_another_tenants_run_is_not_found_through_a_token(api: Api) -> None:
    alpha = await api.key("alpha")
    run = await finished_run(api, alpha)
    beta = await api.key("beta")
    for what in ("stream", "replay"):
        path = f"/v1/runs/{run['id']}/{what}"
        response = await with_token(api, path, await issued(api, beta, path))
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"


async def test_a_viewer_gets_tokens_for_the_workspace_and_run_streams(api: Api) -> None:
    admin = await api.key()
    run = await finished_run(api, admin)
    viewer = await api.key(roles=("viewer",))
    token = await issued(api, viewer, "/v1/events")
    status, media = opening_status(api, "/v1/events", token)
    assert status == 200 and media.startswith(SSE_TYPE)
    path = f"/v1/runs/{run['id']}/stream"
    response = await with_token(api, path, await issued(api, viewer, path))
    assert response.status_code == 200 and b"event: run.completed" in response.content


async def test_a_revoked_keys_tokens_stop_working_at_once(api: Api) -> None:
    admin = await api.key()
    created = await api.client.post(
        "/v1/admin/keys", json={"name": "tab", "roles": ["viewer"]}, headers=auth(admin)
    )
    assert created.status_code == 201, created.text
    key = created.json()
    await api.settle()
    run = await finished_run(api, admin)
    path = f"/v1/runs/{run['id']}/stream"
    token = await issued(api, key["key"], path)
    events_token = await issued(api, key["key"], "/v1/events")

    revoked = await api.client.delete(f"/v1/admin/keys/{key['id']}", headers=auth(admin))
    assert revoked.status_code == 204
    assert_unauthorized(await with_token(api, path, token))
    assert opening_status(api, "/v1/events", events_token)[0] == 401


async def test_asking_for_a_token_needs_a_key_and_a_bearer_header_wins_over_a_token(
    api: Api,
) -> None:
    response = await api.client.post("/v1/stream-tokens", json={"path": "/v1/events"})
    assert_unauthorized(response)
    key = await api.key()
    run = await finished_run(api, key)
    path = f"/v1/runs/{run['id']}/stream"
    both = await api.client.get(path, params={"stream_token": "made-up"}, headers=auth(key))
    assert both.status_code == 200
