"""Prometheus metrics at /metrics: an admin key from anywhere (loopback included) unless
NOME_METRICS_PUBLIC=1, one charset, read at scrape time.

Scrapes go straight to the ASGI app (tests/support/asgi.py), from any client address.
"""

from __future__ import annotations

import uuid

import msgspec
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from nome_api.app import create_app
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.asgi import Answer, call_app
from tests.support.errors import assert_error

CHAT = 'hi\n/tool math.evaluate {"expression": "1+2"}'
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def requests(found: Samples, method: str, route: str, status: str) -> float:
    return value(found, "nome_http_requests_total", method=method, route=route, status=status)


def scrape(api: Api, key: str | None, host: str = "127.0.0.1") -> Answer:
    return call_app(
        api, "/metrics", client=(host, 45678), headers=auth(key) if key is not None else None
    )


def ok_text(answer: Answer) -> str:
    assert answer.status == 200, bytes(answer.body)
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return answer.body.decode()


async def test_an_admin_scrape_shows_traffic_writer_projections_and_runs(api: Api) -> None:
    admin = await api.key()
    created = await api.client.post("/v1/threads", json={"title": "t"}, headers=auth(admin))
    thread_id = created.json()["id"]
    # Read-your-writes, so the first GET finds the thread (200) and the second can't (404).
    wait = {"X-Nome-Min-Position": created.headers["x-nome-position"]}
    for target in (thread_id, str(uuid.uuid4())):
        await api.client.get(f"/v1/threads/{target}", headers=auth(admin, **wait))
    chat = await api.client.post("/v1/chat", json={"input": CHAT}, headers=auth(admin))
    assert chat.status_code == 200, chat.text
    await api.settle()

    for host in ("127.0.0.1", "203.0.113.9"):
        text = ok_text(scrape(api, admin, host))
        found = samples(text)

        assert requests(found, "POST", "/v1/threads", "201") == 1
        template = next(
            dict(labels)["route"]
            for name, labels in found
            if name == "nome_http_requests_total" and "/v1/threads/{" in dict(labels)["route"]
        )
        assert requests(found, "GET", template, "200") == 1
        assert requests(found, "GET", template, "404") == 1
        assert thread_id not in text  # the template, never the raw path
        timed = value(
            found, "nome_http_request_duration_seconds_count", method="POST", route="/v1/chat"
        )
        assert timed == 1
        assert value(found, "nome_commands_appended_total") >= 3
        assert value(found, "nome_commit_batches_total") >= 1
        assert value(found, "nome_commit_batch_size") >= 1
        head = api.runtime.store.head()
        assert value(found, "nome_log_head_position") == head
        for projection in api.runtime.read_models.all:
            assert value(found, "nome_projection_position", projection=projection.name) == head
            assert value(found, "nome_projection_lag_events", projection=projection.name) == 0
            assert value(found, "nome_projection_live", projection=projection.name) == 1
        assert value(found, "nome_runs", status="completed") == 1
        assert value(found, "nome_runs", status="active") == 0
        assert value(found, "nome_approvals_pending") == 0
        assert value(found, "nome_sse_subscribers") == 0
        assert value(found, "nome_metrics_source_up", source="redis") == 1
        assert value(found, "nome_metrics_source_up", source="event_store") == 1


async def test_every_scrape_needs_an_admin_key_loopback_too(api: Api) -> None:
    admin = await api.key()
    member = await api.key("acme", ("member",))

    assert_error(await api.client.get("/metrics"), 401, "unauthorized")
    assert_error(await api.client.get("/metrics", headers=auth(member)), 403, "forbidden")
    response = await api.client.get("/metrics", headers=auth(admin))
    assert response.status_code == 200
    assert "nome_http_requests_total" in response.text
    for host in ("127.0.0.1", "::1", "203.0.113.9"):
        assert scrape(api, None, host).status == 401
    assert "nome_projection_lag_events" in ok_text(scrape(api, admin, "203.0.113.9"))


async def test_metrics_public_lets_a_scraper_in_without_a_key(settings: Settings) -> None:
    runtime = Runtime(msgspec.structs.replace(settings, metrics_public=True))
    async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_runs_and_pending_approvals_are_summed_over_tenants(api: Api) -> None:
    for tenant in ("acme", "globex"):
        admin = await api.key(tenant)
        policy = await api.client.put(
            "/v1/tools/policies/math.evaluate", json={"approval": "required"}, headers=auth(admin)
        )
        assert policy.status_code == 200, policy.text
        waiting = await api.client.post("/v1/chat", json={"input": CHAT}, headers=auth(admin))
        assert waiting.status_code == 202, waiting.text
    await api.settle()

    found = samples(ok_text(scrape(api, admin)))

    assert value(found, "nome_approvals_pending") == 2
    assert value(found, "nome_runs", status="active") == 2
    assert value(found, "nome_runs", status="completed") == 0


async def test_sse_subscribers_are_read_from_the_stream_hub(api: Api) -> None:
    admin = await api.key()
    api.runtime.hub.subscribers += 3
    try:
        assert value(samples(ok_text(scrape(api, admin))), "nome_sse_subscribers") == 3
    finally:
        api.runtime.hub.subscribers -= 3


async def test_each_app_counts_into_its_own_registry(api: Api) -> None:
    # A second app over the same runtime registers the same metric names without a clash.
    admin = await api.key()
    other = create_app(runtime=api.runtime)
    assert other is not None
    await api.client.get("/v1/health")

    found = samples(ok_text(scrape(api, admin)))

    assert requests(found, "GET", "/v1/health", "200") == 1
