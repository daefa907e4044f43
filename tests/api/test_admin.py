"""Health, bootstrap, keys, client identities and projection admin (API.md §1)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from nome_api import __version__
from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.errors import assert_error

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RAW_KEY = re.compile(r"^nome_sk_[A-Za-z0-9_-]{43}$")
WEB = {
    "X-Nome-Client-Surface": "web",
    "X-Nome-Client-Version": "2.0.1",
    "X-Nome-Client-Revision": "abc1234",
}
CLI = {"X-Nome-Client-Surface": "cli", "X-Nome-Client-Version": "0.9.0"}


async def test_health_answers_ok_without_a_key(api: Api) -> None:
    await api.key()
    await api.settle()
    response = await api.client.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "checks": {"event_store": "ok", "read_models": "ok", "projector_lag_events": 0},
    }


async def test_the_openapi_schema_is_served_without_a_key(api: Api) -> None:
    response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    assert "/v1/threads" in schema["paths"] and "/v1/admin/keys" in schema["paths"]


async def test_bootstrap_describes_the_caller_and_echoes_its_build_identity(api: Api) -> None:
    key = await api.key("acme", ("member",))
    response = await api.client.get("/v1/bootstrap", headers=auth(key, **WEB))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "principal",
        "tenant",
        "entitlements",
        "credits",
        "limits",
        "features",
        "server",
        "client",
    }
    assert set(body["principal"]) == {"key_id", "name", "roles"}
    assert "member" in body["principal"]["roles"] and "admin" not in body["principal"]["roles"]
    assert body["tenant"]["id"] == tenant_id_for("acme")
    assert body["tenant"]["name"] == "acme"
    assert isinstance(body["tenant"]["plan"], str) and body["tenant"]["plan"]
    assert isinstance(body["entitlements"], list)
    assert isinstance(body["credits"]["balance"], int)
    assert isinstance(body["limits"], dict) and isinstance(body["features"], dict)
    assert body["server"]["version"] == __version__ and body["server"]["revision"]
    # No release manifest in this deployment: nothing to compare the build with.
    assert body["client"] == {
        "surface": "web",
        "version": "2.0.1",
        "revision": "abc1234",
        "latest_version": None,
        "update_available": False,
        "update_required": False,
    }

    bare = (await api.client.get("/v1/bootstrap", headers=auth(key))).json()
    assert bare["client"] == {
        "surface": None,
        "version": None,
        "revision": None,
        "latest_version": None,
        "update_available": False,
        "update_required": False,
    }
    assert bare["principal"] == body["principal"]


async def test_a_created_key_is_shown_once_and_works_at_once(api: Api) -> None:
    admin = await api.key()
    response = await api.client.post(
        "/v1/admin/keys", json={"name": "ci", "roles": ["member", "viewer"]}, headers=auth(admin)
    )
    assert response.status_code == 201
    created = response.json()
    assert {"id", "name", "roles", "key"} <= set(created)
    assert created["name"] == "ci"
    assert set(created["roles"]) == {"member", "viewer"}
    assert RAW_KEY.match(created["key"])
    assert int(response.headers["x-nome-position"]) > 0

    me = await api.client.get("/v1/bootstrap", headers=auth(created["key"]))
    assert me.status_code == 200
    assert me.json()["principal"]["key_id"] == created["id"]

    listed = await api.client.get("/v1/admin/keys", headers=auth(admin))
    assert created["key"] not in listed.text
    entry = next(k for k in listed.json()["data"] if k["id"] == created["id"])
    assert "key" not in entry and entry["name"] == "ci"


async def test_a_key_cannot_be_created_for_another_tenant_or_with_unknown_roles(
    api: Api,
) -> None:
    admin = await api.key("acme")
    head = api.runtime.store.head()
    foreign = await api.client.post(
        "/v1/admin/keys",
        json={"name": "x", "roles": ["admin"], "tenant_id": tenant_id_for("globex")},
        headers=auth(admin),
    )
    assert_error(foreign, 404, "not_found")
    for roles in [["root"], []]:
        bad = await api.client.post(
            "/v1/admin/keys", json={"name": "x", "roles": roles}, headers=auth(admin)
        )
        body = assert_error(bad, 422, "validation_failed", issues=True)
        assert body["issues"][0]["path"][0] == "roles"
    assert api.runtime.store.head() == head
    own = await api.client.post(
        "/v1/admin/keys",
        json={"name": "x", "roles": ["viewer"], "tenant_id": tenant_id_for("acme")},
        headers=auth(admin),
    )
    assert own.status_code == 201


async def test_the_key_list_pages_with_a_cursor_and_keeps_to_its_tenant(api: Api) -> None:
    admin = await api.key("acme")
    await api.key("globex")
    for i in range(4):
        created = await api.client.post(
            "/v1/admin/keys", json={"name": f"k{i}", "roles": ["viewer"]}, headers=auth(admin)
        )
        assert created.status_code == 201
    names: list[str] = []
    cursor = None
    totals = set()
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/admin/keys", params=params, headers=auth(admin))).json()
        names += [k["name"] for k in page["data"]]
        totals.add(page["total_count"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(names) == ["acme-admin", "k0", "k1", "k2", "k3"]
    assert totals == {5}
    assert all(set(k) >= {"id", "name", "roles"} for k in page["data"])


async def test_client_build_identities_are_counted_per_surface_version_and_revision(
    api: Api,
) -> None:
    admin = await api.key("acme")
    viewer = await api.key("acme", ("viewer",))
    for _ in range(3):
        assert (await api.client.get("/v1/threads", headers=auth(viewer, **WEB))).status_code == 200
    for _ in range(2):
        assert (
            await api.client.get("/v1/bootstrap", headers=auth(admin, **CLI))
        ).status_code == 200
    other = await api.key("globex")
    await api.client.get("/v1/threads", headers=auth(other, **WEB))

    response = await api.client.get("/v1/admin/clients", headers=auth(admin))
    assert response.status_code == 200
    seen = {(c["surface"], c["version"], c["revision"]): c for c in response.json()}
    assert set(seen) == {("web", "2.0.1", "abc1234"), ("cli", "0.9.0", None)}
    assert seen["web", "2.0.1", "abc1234"]["requests"] == 3
    assert seen["cli", "0.9.0", None]["requests"] == 2
    assert all(TIME.match(c["last_seen_at"]) for c in seen.values())

    # The other tenant's one request is counted for it alone.
    theirs = (await api.client.get("/v1/admin/clients", headers=auth(other))).json()
    assert [(c["surface"], c["requests"]) for c in theirs] == [("web", 1)]


async def test_projections_are_listed_with_position_head_and_lag(api: Api) -> None:
    admin = await api.key()
    await api.client.post("/v1/threads", json={"title": "a"}, headers=auth(admin))
    await api.settle()
    response = await api.client.get("/v1/admin/projections", headers=auth(admin))
    assert response.status_code == 200
    projections = {p["name"]: p for p in response.json()}
    assert {"tenants", "keys", "threads"} <= set(projections)
    head = api.runtime.store.head()
    for projection in projections.values():
        assert set(projection) == {"name", "position", "head", "lag_events", "status"}
        assert projection["head"] == head
        assert projection["position"] == head and projection["lag_events"] == 0
        assert projection["status"] == "live"


async def test_a_rebuilt_projection_lists_the_same_threads_again(api: Api) -> None:
    admin = await api.key()
    for title in ["one", "two", "three"]:
        created = await api.client.post("/v1/threads", json={"title": title}, headers=auth(admin))
        assert created.status_code == 201
    message = await api.client.post(
        f"/v1/threads/{created.json()['id']}/messages", json={"content": "x"}, headers=auth(admin)
    )
    await api.settle(int(message.headers["x-nome-position"]))
    before = (await api.client.get("/v1/threads", headers=auth(admin))).json()
    assert before["total_count"] == 3

    platform = await api.platform_key()
    response = await api.client.post(
        "/v1/admin/projections/threads/rebuild", headers=auth(platform)
    )
    assert response.status_code == 202
    assert response.json()["name"] == "threads"

    head = api.runtime.store.head()
    for _ in range(400):
        listed = (await api.client.get("/v1/admin/projections", headers=auth(admin))).json()
        threads = next(p for p in listed if p["name"] == "threads")
        if threads["status"] == "live" and threads["position"] >= head:
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError(f"the rebuild did not finish: {threads}")
    after = (await api.client.get("/v1/threads", headers=auth(admin))).json()
    assert after == before


async def test_rebuilding_an_unknown_projection_is_404(api: Api) -> None:
    platform = await api.platform_key()
    response = await api.client.post("/v1/admin/projections/nope/rebuild", headers=auth(platform))
    assert_error(response, 404, "not_found")


async def test_only_the_platform_operator_rebuilds_read_models_every_tenant_shares(
    api: Api,
) -> None:
    admin, platform = await api.key(), await api.platform_key()
    path = "/v1/admin/projections/threads/rebuild"

    assert_error(await api.client.post(path, headers=auth(admin)), 403, "forbidden")
    # The platform's key is no tenant's key: a tenant's routes are not its own.
    assert_error(await api.client.get("/v1/threads", headers=auth(platform)), 403, "forbidden")
    assert (await api.client.post(path, headers=auth(platform))).status_code == 202
