"""Who may do what: roles, revocation, rate limits and OIDC bearer tokens (API.md §0, §1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from litestar.testing import AsyncTestClient

from nome_api.app import create_app
from nome_api.runtime import Runtime
from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.errors import assert_error

ISSUER = "https://idp.example.test/"
AUDIENCE = "nome-api"
KID = "api-test-rsa"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    """An app on these settings, started and stopped like the `api` fixture's."""
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
        yield Api(client, runtime)


async def seed(api: Api) -> tuple[str, str]:
    """An admin key and one thread of tenant acme, settled in the read models."""
    admin = await api.key("acme", ("admin",))
    created = await api.client.post("/v1/threads", json={"title": "seed"}, headers=auth(admin))
    assert created.status_code == 201
    await api.settle(int(created.headers["x-nome-position"]))
    return admin, created.json()["id"]


# -- roles --------------------------------------------------------------------------------


def write_routes(thread_id: str, key_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/v1/threads", {"title": "nope"}),
        ("PATCH", f"/v1/threads/{thread_id}", {"title": "nope"}),
        ("DELETE", f"/v1/threads/{thread_id}", None),
        ("POST", f"/v1/threads/{thread_id}/messages", {"content": "nope"}),
        ("POST", "/v1/admin/keys", {"name": "nope", "roles": ["admin"]}),
        ("DELETE", f"/v1/admin/keys/{key_id}", None),
        ("POST", "/v1/admin/projections/threads/rebuild", None),
    ]


async def test_a_viewer_gets_403_on_every_write_route_and_nothing_changes(api: Api) -> None:
    admin, thread_id = await seed(api)
    viewer = await api.key("acme", ("viewer",))
    keys = (await api.client.get("/v1/admin/keys", headers=auth(admin))).json()["data"]
    head = api.runtime.store.head()
    for method, path, body in write_routes(thread_id, keys[0]["id"]):
        response = await api.client.request(method, path, json=body, headers=auth(viewer))
        assert response.status_code == 403, (method, path, response.text)
        assert_error(response, 403, "forbidden")
    assert api.runtime.store.head() == head
    thread = await api.client.get(f"/v1/threads/{thread_id}", headers=auth(admin))
    assert thread.json()["title"] == "seed"
    assert (await api.client.get("/v1/threads", headers=auth(admin))).status_code == 200


async def test_a_viewer_can_read_threads_messages_and_bootstrap(api: Api) -> None:
    _, thread_id = await seed(api)
    viewer = await api.key("acme", ("viewer",))
    for path in [
        "/v1/threads",
        f"/v1/threads/{thread_id}",
        f"/v1/threads/{thread_id}/messages",
        "/v1/bootstrap",
    ]:
        response = await api.client.get(path, headers=auth(viewer))
        assert response.status_code == 200, (path, response.text)


async def test_a_member_can_write_threads_but_gets_403_on_every_admin_route(api: Api) -> None:
    admin, thread_id = await seed(api)
    member = await api.key("acme", ("member",))
    key_id = (await api.client.get("/v1/admin/keys", headers=auth(admin))).json()["data"][0]["id"]
    head = api.runtime.store.head()
    for method, path, body in [
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"name": "escalate", "roles": ["admin"]}),
        ("DELETE", f"/v1/admin/keys/{key_id}", None),
        ("GET", "/v1/admin/clients", None),
        ("GET", "/v1/admin/projections", None),
        ("POST", "/v1/admin/projections/threads/rebuild", None),
    ]:
        response = await api.client.request(method, path, json=body, headers=auth(member))
        assert_error(response, 403, "forbidden")
    assert api.runtime.store.head() == head
    wrote = await api.client.post(
        f"/v1/threads/{thread_id}/messages", json={"content": "ok"}, headers=auth(member)
    )
    assert wrote.status_code == 201


async def test_an_operator_sees_projections_but_not_keys(api: Api) -> None:
    await seed(api)
    operator = await api.key("acme", ("operator",))
    assert (
        await api.client.get("/v1/admin/projections", headers=auth(operator))
    ).status_code == 200
    assert_error(await api.client.get("/v1/admin/keys", headers=auth(operator)), 403, "forbidden")
    assert_error(
        await api.client.post("/v1/threads", json={}, headers=auth(operator)), 403, "forbidden"
    )


# -- revocation ---------------------------------------------------------------------------


async def test_a_revoked_key_gets_401_on_its_very_next_request(api: Api) -> None:
    admin, _ = await seed(api)
    created = await api.client.post(
        "/v1/admin/keys", json={"name": "laptop", "roles": ["member"]}, headers=auth(admin)
    )
    assert created.status_code == 201
    doomed = created.json()
    assert (await api.client.get("/v1/threads", headers=auth(doomed["key"]))).status_code == 200

    revoked = await api.client.delete(f"/v1/admin/keys/{doomed['id']}", headers=auth(admin))
    assert revoked.status_code == 204
    assert int(revoked.headers["x-nome-position"]) > 0

    response = await api.client.get("/v1/threads", headers=auth(doomed["key"]))
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    write = await api.client.post("/v1/threads", json={}, headers=auth(doomed["key"]))
    assert_error(write, 401, "unauthorized")
    # The revoking admin's own key is untouched.
    assert (await api.client.get("/v1/threads", headers=auth(admin))).status_code == 200


async def test_an_admin_can_revoke_its_own_key_and_is_then_locked_out(api: Api) -> None:
    admin, _ = await seed(api)
    me = (await api.client.get("/v1/bootstrap", headers=auth(admin))).json()["principal"]
    revoked = await api.client.delete(f"/v1/admin/keys/{me['key_id']}", headers=auth(admin))
    assert revoked.status_code == 204
    assert_error(await api.client.get("/v1/bootstrap", headers=auth(admin)), 401, "unauthorized")


async def test_revoking_an_unknown_or_foreign_key_is_404_and_revokes_nothing(api: Api) -> None:
    admin, _ = await seed(api)
    foreign = await api.key("globex", ("admin",))
    foreign_id = (await api.client.get("/v1/bootstrap", headers=auth(foreign))).json()["principal"][
        "key_id"
    ]
    for key_id in [foreign_id, "00000000-0000-4000-8000-000000000000", "not-a-uuid"]:
        response = await api.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(admin))
        assert_error(response, 404, "not_found")
    assert (await api.client.get("/v1/threads", headers=auth(foreign))).status_code == 200


async def test_revoking_a_key_twice_is_404_the_second_time(api: Api) -> None:
    admin, _ = await seed(api)
    created = await api.client.post(
        "/v1/admin/keys", json={"name": "once", "roles": ["viewer"]}, headers=auth(admin)
    )
    key_id = created.json()["id"]
    first = await api.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(admin))
    assert first.status_code == 204
    assert_error(
        await api.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(admin)), 404, "not_found"
    )


# -- rate limit ---------------------------------------------------------------------------


async def test_a_key_past_its_rate_limit_gets_429_with_retry_after(settings: Settings) -> None:
    async with running(msgspec.structs.replace(settings, rate_limit=5)) as api:
        busy = await api.key("acme", ("viewer",))
        calm = await api.key("acme", ("viewer",))
        statuses = []
        limited = None
        # Twelve requests cannot fit in two one-minute windows of five, so one is refused
        # even if a window boundary falls inside the loop.
        for _ in range(12):
            response = await api.client.get("/v1/threads", headers=auth(busy))
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited = response
                break
        assert statuses[:5] == [200] * 5
        assert limited is not None, statuses
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # The limit is per key: another key of the same tenant is not affected.
        assert (await api.client.get("/v1/threads", headers=auth(calm))).status_code == 200


# -- OIDC ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A JWKS endpoint on 127.0.0.1 publishing the signing key's public half."""
    jwk = {**json.loads(RSAAlgorithm.to_jwk(signing_key.public_key())), "kid": KID}
    body = json.dumps({"keys": [{**jwk, "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def token(signing_key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": now,
        "exp": now + 300,
        "nome_tenant": "acme",
        "nome_roles": ["member"],
        **overrides,
    }
    return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KID})


@asynccontextmanager
async def oidc_app(settings: Settings, jwks_url: str) -> AsyncIterator[Api]:
    oidc = msgspec.structs.replace(
        settings,
        auth="oidc",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=jwks_url,
    )
    oidc.check()
    async with running(oidc) as api:
        yield api


async def test_a_valid_oidc_token_reaches_the_threads_of_its_tenant(
    settings: Settings, jwks_url: str, signing_key: rsa.RSAPrivateKey
) -> None:
    async with oidc_app(settings, jwks_url) as api:
        bearer = token(signing_key)
        created = await api.client.post(
            "/v1/threads", json={"title": "via oidc"}, headers=auth(bearer)
        )
        assert created.status_code == 201, created.text
        listed = await api.client.get(
            "/v1/threads",
            headers=auth(bearer, **{"X-Nome-Min-Position": created.headers["x-nome-position"]}),
        )
        assert listed.status_code == 200
        assert [t["title"] for t in listed.json()["data"]] == ["via oidc"]

        # The thread belongs to tenant acme: an acme API key sees it, another tenant does not.
        acme_key = await api.key("acme", ("viewer",))
        other_key = await api.key("globex", ("viewer",))
        thread_id = created.json()["id"]
        seen = await api.client.get(f"/v1/threads/{thread_id}", headers=auth(acme_key))
        assert seen.status_code == 200
        hidden = await api.client.get(f"/v1/threads/{thread_id}", headers=auth(other_key))
        assert_error(hidden, 404, "not_found")


async def test_oidc_roles_claim_is_enforced(
    settings: Settings, jwks_url: str, signing_key: rsa.RSAPrivateKey
) -> None:
    async with oidc_app(settings, jwks_url) as api:
        viewer = token(signing_key, nome_roles=["viewer"])
        assert (await api.client.get("/v1/threads", headers=auth(viewer))).status_code == 200
        response = await api.client.post("/v1/threads", json={}, headers=auth(viewer))
        assert_error(response, 403, "forbidden")


async def test_an_expired_or_unusable_oidc_token_is_401(
    settings: Settings, jwks_url: str, signing_key: rsa.RSAPrivateKey
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    async with oidc_app(settings, jwks_url) as api:
        for bearer in [
            token(signing_key, exp=now - 120),
            token(signing_key, aud="someone-else"),
            token(signing_key, nome_tenant=""),
            token(stranger),  # right kid, wrong signature
            "not.a.jwt",
        ]:
            response = await api.client.get("/v1/threads", headers=auth(bearer))
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
