"""Marketplace imports and the catalog (API.md §6a) against real git repositories made here:
an import pins the commit its ref named, publishes the manifest read at that commit, keeps
versions immutable, and a tenant's own packages stay its own."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.api_approvals import eventually, new_thread, of_type, run_events, wait_for_run
from tests.support.errors import assert_error
from tests.support.examples import PACKAGES, example_server
from tests.support.processes import free_port

PACKAGE = "/v1/marketplace/packages/weather-demo"
EXAMPLE = PACKAGES / "weather" / "nome-package.json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The deployment's settings with file:// imports on (the repositories are made here)
    and tool servers on 127.0.0.1 allowed."""
    return msgspec.structs.replace(settings, import_file_urls=True, fetch_allow_hosts="127.0.0.1")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_repo(tmp_path: Path, manifest: dict[str, Any] | str | None, name: str = "repo") -> Path:
    repo = tmp_path / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, manifest)
    return repo


def commit(repo: Path, manifest: dict[str, Any] | str | None, message: str = "c") -> str:
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2)
        (repo / "nome-package.json").write_text(text)
    (repo / "README.md").write_text(message)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def example(**changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(EXAMPLE.read_text())
    manifest.update(changes)
    return manifest


async def enterprise_key(api: Api, tenant: str = "acme") -> str:
    """An admin of a tenant whose plan includes private packages."""
    await api.runtime.app.tenants.create(tenant, plan="enterprise")
    return await api.key(tenant)


async def imported(api: Api, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the import and wait for the worker to end it; the import as it ended."""
    accepted = await api.client.post("/v1/marketplace/imports", json=body, headers=auth(key))
    assert accepted.status_code == 202, accepted.text
    first = accepted.json()
    assert first["state"] == "pending" and first["commit"] is None
    for _ in range(600):
        got = await api.client.get(f"/v1/marketplace/imports/{first['id']}", headers=auth(key))
        assert got.status_code == 200, got.text
        if got.json()["state"] in ("published", "failed"):
            await api.settle()
            return got.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the import never ended: {got.json()}")


async def test_an_import_pins_the_commit_and_publishes_the_manifest_read_there(
    api: Api, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, example())
    pinned = git(repo, "rev-parse", "HEAD")
    key = await enterprise_key(api)

    done = await imported(api, key, {"repo": f"file://{repo}"})
    assert done["state"] == "published", done
    assert (done["commit"], done["package"], done["version"]) == (pinned, "weather-demo", "1.0.0")
    assert done["visibility"] == "tenant" and done["failure"] is None

    # The branch moves on: the published version stays what the pinned commit said.
    commit(repo, example(description="changed after the import"), "moved")
    package = (
        await api.client.get("/v1/marketplace/packages/weather-demo", headers=auth(key))
    ).json()
    assert package["source"] == {"repo": f"file://{repo}", "commit": pinned}
    assert package["description"] == example()["description"]
    assert package["versions"][0]["version"] == "1.0.0"
    assert set(package["tool_hashes"]) == {t["name"] for t in example()["tools"]}
    assert all(h.startswith("sha256:") for h in package["tool_hashes"].values())
    assert package["visibility"] == "tenant" and package["installed"] is False


async def test_a_version_is_immutable(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, example())
    key = await enterprise_key(api)
    assert (await imported(api, key, {"repo": f"file://{repo}"}))["state"] == "published"

    # The same content again is the same publication.
    commit(repo, None, "only the readme changed")
    again = await imported(api, key, {"repo": f"file://{repo}"})
    assert again["state"] == "published", again

    # Other content under the same version is refused; a new version is published.
    commit(repo, example(description="other content"), "other")
    refused = await imported(api, key, {"repo": f"file://{repo}", "ref": "main"})
    assert refused["state"] == "failed"
    assert refused["failure"]["code"] == "version_exists"
    commit(repo, example(version="1.1.0", description="newer"), "newer")
    newer = await imported(api, key, {"repo": f"file://{repo}"})
    assert newer["state"] == "published" and newer["version"] == "1.1.0"

    package = (
        await api.client.get("/v1/marketplace/packages/weather-demo", headers=auth(key))
    ).json()
    assert [v["version"] for v in package["versions"]] == ["1.0.0", "1.1.0"]
    assert (package["version"], package["description"]) == ("1.1.0", "newer")


@pytest.mark.parametrize(
    ("manifest", "ref", "code"),
    [
        (None, None, "manifest_missing"),
        ("{not json", None, "manifest_invalid"),
        ({"name": "Bad Name"}, None, "manifest_invalid"),
        ("x" * (257 * 1024), None, "too_large"),
        ({}, "no-such-branch", "ref_not_found"),
    ],
)
async def test_a_failed_import_says_why(
    api: Api, tmp_path: Path, manifest: Any, ref: str | None, code: str
) -> None:
    repo = make_repo(tmp_path, example() if manifest == {} else manifest)
    key = await enterprise_key(api)
    body = {"repo": f"file://{repo}", **({"ref": ref} if ref else {})}
    failed = await imported(api, key, body)
    assert failed["state"] == "failed", failed
    assert failed["failure"]["code"] == code
    if code == "manifest_invalid" and manifest != "{not json":
        assert failed["failure"]["issues"], failed
    listed = (await api.client.get("/v1/marketplace/packages", headers=auth(key))).json()
    assert listed["data"] == []


async def test_an_unreachable_repository_fails_the_import(api: Api, tmp_path: Path) -> None:
    key = await enterprise_key(api)
    failed = await imported(api, key, {"repo": f"file://{tmp_path}/nothing-here"})
    assert failed["failure"]["code"] == "repo_unreachable"


async def test_a_tenants_own_packages_are_invisible_to_other_tenants(
    api: Api, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, example())
    acme = await enterprise_key(api, "acme")
    globex = await enterprise_key(api, "globex")
    done = await imported(api, acme, {"repo": f"file://{repo}"})
    assert done["state"] == "published"

    missing = await api.client.get("/v1/marketplace/packages/weather-demo", headers=auth(globex))
    assert_error(missing, 404, "not_found")
    listed = (await api.client.get("/v1/marketplace/packages", headers=auth(globex))).json()
    assert listed == {"data": [], "next_cursor": None, "total_count": 0}
    # Nor is the import itself.
    other = await api.client.get(f"/v1/marketplace/imports/{done['id']}", headers=auth(globex))
    assert_error(other, 404, "not_found")


async def test_public_packages_are_the_platforms_and_every_tenant_sees_them(
    api: Api, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, example())
    platform = await api.platform_key()
    tenant_admin = await api.key("initech")  # on the free plan: no private packages

    refused = await api.client.post(
        "/v1/marketplace/imports",
        json={"repo": f"file://{repo}", "visibility": "public"},
        headers=auth(tenant_admin),
    )
    assert_error(refused, 403, "forbidden")
    own = await api.client.post(
        "/v1/marketplace/imports", json={"repo": f"file://{repo}"}, headers=auth(tenant_admin)
    )
    body = assert_error(own, 403, "entitlement_required", details=frozenset({"missing"}))
    assert body["missing"] == ["private_packages"]

    done = await imported(api, platform, {"repo": f"file://{repo}"})
    assert (done["state"], done["visibility"]) == ("published", "public")
    viewer = await api.key("initech", ("viewer",))
    package = await api.client.get("/v1/marketplace/packages/weather-demo", headers=auth(viewer))
    assert package.status_code == 200 and package.json()["visibility"] == "public"


async def test_search_pages_and_cursors(api: Api, tmp_path: Path) -> None:
    key = await enterprise_key(api)
    words = {
        "alpha-tools": "Forecasts weather",
        "beta-tools": "Sends alerts",
        "gamma": "weather alerts",
    }
    for name, description in words.items():
        repo = make_repo(tmp_path, example(name=name, description=description), name)
        assert (await imported(api, key, {"repo": f"file://{repo}"}))["state"] == "published"

    async def names(query: str) -> list[str]:
        page = await api.client.get(f"/v1/marketplace/packages?{query}", headers=auth(key))
        assert page.status_code == 200, page.text
        return [p["name"] for p in page.json()["data"]]

    assert await names("q=weather") == ["alpha-tools", "gamma"]
    assert await names("q=WEA+ale") == ["gamma"]
    assert await names("q=tools") == ["alpha-tools", "beta-tools"]
    assert await names("q=forecastsweatherlong") == []
    first = (await api.client.get("/v1/marketplace/packages?limit=2", headers=auth(key))).json()
    assert [p["name"] for p in first["data"]] == ["alpha-tools", "beta-tools"]
    assert first["total_count"] == 3
    rest = await names(f"limit=2&cursor={first['next_cursor']}")
    assert rest == ["gamma"]
    bad = await api.client.get("/v1/marketplace/packages?cursor=%25%25", headers=auth(key))
    assert_error(bad, 400, "bad_request")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"repo": "https://user:secret@example.com/x.git"}, "repo"),
        ({"repo": "ssh://git@example.com/x.git"}, "repo"),
        ({"repo": "-oProxyCommand=touch /tmp/x"}, "repo"),
        ({"repo": "http://[::1/x"}, "repo"),
        ({"repo": "file:///tmp/x", "ref": "--upload-pack=x"}, "ref"),
        ({"repo": "file:///tmp/x", "ref": "a..b"}, "ref"),
    ],
)
async def test_a_repository_or_ref_that_cannot_be_imported_is_refused_before_anything_is_kept(
    api: Api, body: dict[str, Any], path: str
) -> None:
    key = await enterprise_key(api)
    head = api.runtime.store.head()
    answer = await api.client.post("/v1/marketplace/imports", json=body, headers=auth(key))
    assert answer.status_code in (400, 422), answer.text
    assert "secret" not in answer.text
    assert api.runtime.store.head() == head


def test_git_is_installed() -> None:
    assert shutil.which("git"), "the marketplace tests need git"


# -- installs ----------------------------------------------------------------------------


def weather_server(port: int, secret: str) -> Any:
    """The example package's HTTP tool server (it checks our signatures)."""
    server, _ = example_server("weather").serve(port, secret)
    return server


async def published(api: Api, key: str, tmp_path: Path, name: str, **changes: Any) -> None:
    repo = make_repo(tmp_path, example(**changes), name)
    done = await imported(api, key, {"repo": f"file://{repo}"})
    assert done["state"] == "published", done


async def test_an_installed_package_tool_is_called_signed_and_uninstalled_it_is_gone(
    api: Api, tmp_path: Path
) -> None:
    key = await enterprise_key(api)
    port = free_port()  # where the tool server will listen: the manifest names it
    tools = [
        {**tool, "endpoint": {"type": "http", "url": f"http://127.0.0.1:{port}/tools"}}
        for tool in example()["tools"]
    ]
    await published(api, key, tmp_path, "weather", tools=tools)

    installed = await api.client.post(
        "/v1/marketplace/installs", json={"package": "weather-demo"}, headers=auth(key)
    )
    assert installed.status_code == 201, installed.text
    install = installed.json()
    assert (install["state"], install["version"]) == ("installed", "1.0.0")
    assert [t["name"] for t in install["tools"]] == ["weather-demo.forecast", "weather-demo.alert"]
    secret = install["signing_secret"]
    assert secret.startswith("whsec_")
    await api.settle()

    server = weather_server(port, secret)
    try:
        listed = (await api.client.get("/v1/tools", headers=auth(key))).json()
        mine = {t["name"]: t for t in listed if t["name"].startswith("weather-demo.")}
        assert mine["weather-demo.forecast"]["source"] == "package:weather-demo@1.0.0"
        # Dangerous: an approval by default.
        assert mine["weather-demo.alert"]["policy"]["approval"] == "required"

        called = await api.client.post(
            "/v1/tools/call",
            json={"tool": "weather-demo.forecast", "arguments": {"city": "Lyon"}},
            headers=auth(key),
        )
        assert called.status_code == 200, called.text
        receipt = called.json()
        assert receipt["status"] == "ok", receipt["error"]
        assert receipt["result"]["city"] == "Lyon"

        # The secret is shown at install only.
        got = (await api.client.get("/v1/marketplace/installs", headers=auth(key))).json()
        assert [i["package"] for i in got["data"]] == ["weather-demo"]
        assert "signing_secret" not in got["data"][0]
        package = (await api.client.get(PACKAGE, headers=auth(key))).json()
        assert package["installed"] is True and package["install_state"] == "installed"

        gone = await api.client.delete("/v1/marketplace/installs/weather-demo", headers=auth(key))
        assert gone.status_code == 204, gone.text
        await api.settle()
        listed = (await api.client.get("/v1/tools", headers=auth(key))).json()
        assert not [t for t in listed if t["name"].startswith("weather-demo.")]
        again = await api.client.delete("/v1/marketplace/installs/weather-demo", headers=auth(key))
        assert_error(again, 404, "not_found")
    finally:
        server.shutdown()
        server.server_close()


async def test_a_call_approved_after_its_package_was_uninstalled_gets_tool_uninstalled(
    api: Api, tmp_path: Path
) -> None:
    key = await enterprise_key(api)
    await published(api, key, tmp_path, "weather")
    installed = await api.client.post(
        "/v1/marketplace/installs", json={"package": "weather-demo"}, headers=auth(key)
    )
    assert installed.status_code == 201, installed.text
    await api.settle()
    call = {"tool": "weather-demo.alert", "arguments": {"city": "Lyon", "message": "storm"}}
    pending = await api.client.post("/v1/tools/call", json=call, headers=auth(key))
    assert pending.status_code == 202, pending.text
    gone = await api.client.delete("/v1/marketplace/installs/weather-demo", headers=auth(key))
    assert gone.status_code == 204
    approval = pending.json()["approval_id"]
    answered = await api.client.post(
        f"/v1/approvals/{approval}/approve", json={}, headers=auth(key)
    )
    assert answered.status_code == 200, answered.text
    # The approver's request ran the call: its receipt is in the answer.
    receipt = answered.json()["receipt"]
    assert receipt["status"] == "error", receipt
    assert receipt["error"].startswith("tool_uninstalled")


async def test_installs_need_the_entitlements_and_stay_under_max_installs(
    api: Api, tmp_path: Path
) -> None:
    platform = await api.platform_key()
    for name in ("one", "two", "three"):
        repo = make_repo(tmp_path, example(name=f"pkg-{name}"), name)
        assert (await imported(api, platform, {"repo": f"file://{repo}"}))["state"] == "published"

    free = await api.key("initech")
    refused = await api.client.post(
        "/v1/marketplace/installs", json={"package": "pkg-one"}, headers=auth(free)
    )
    body = assert_error(refused, 403, "entitlement_required", details=frozenset({"missing"}))
    assert body["missing"] == ["marketplace"]

    key = await enterprise_key(api)
    tenant = api.runtime.app.tenants.named("acme")
    assert tenant is not None
    limited = await api.client.put(
        f"/v1/platform/tenants/{tenant.id}/limits", json={"max_installs": 2}, headers=auth(platform)
    )
    assert limited.status_code == 200, limited.text

    answers = await asyncio.gather(
        *(
            api.client.post(
                "/v1/marketplace/installs", json={"package": f"pkg-{n}"}, headers=auth(key)
            )
            for n in ("one", "two", "three")
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201, 403], [a.text for a in answers]
    over = next(a for a in answers if a.status_code == 403)
    body = assert_error(over, 403, "limit_reached", details=frozenset({"limit", "current"}))
    assert (body["limit"], body["current"]) == (2, 2)

    missing = await api.client.post(
        "/v1/marketplace/installs", json={"package": "pkg-nothing"}, headers=auth(key)
    )
    assert_error(missing, 404, "not_found")
    no_version = await api.client.post(
        "/v1/marketplace/installs",
        json={"package": "pkg-one", "version": "9.9.9"},
        headers=auth(key),
    )
    assert_error(no_version, 404, "not_found")


async def test_a_package_needing_a_connector_fails_its_install(api: Api, tmp_path: Path) -> None:
    key = await enterprise_key(api)
    await published(api, key, tmp_path, "weather", requires={"connectors": ["slack"]})
    failed = await api.client.post(
        "/v1/marketplace/installs", json={"package": "weather-demo"}, headers=auth(key)
    )
    assert failed.status_code == 201, failed.text
    assert failed.json()["state"] == "failed"
    assert failed.json()["failure"]["code"] == "connector_missing"
    assert "signing_secret" not in failed.json()


async def test_an_mcp_package_is_checked_against_its_server_and_called_through_it(
    api: Api, tmp_path: Path
) -> None:
    key = await enterprise_key(api)
    server = example_server("notes-mcp").serve(0)
    try:
        manifest = json.loads((PACKAGES / "notes-mcp" / "nome-package.json").read_text())
        for tool in manifest["tools"]:
            tool["endpoint"]["url"] = server.url
        repo = make_repo(tmp_path, manifest)
        assert (await imported(api, key, {"repo": f"file://{repo}"}))["state"] == "published"

        installed = await api.client.post(
            "/v1/marketplace/installs", json={"package": "notes-mcp"}, headers=auth(key)
        )
        assert installed.status_code == 201, installed.text
        assert installed.json()["state"] == "installed", installed.json()
        assert "signing_secret" not in installed.json()  # nothing of it is called over HTTP
        await api.settle()
        for text in ("first", "second"):
            added = await api.client.post(
                "/v1/tools/call",
                json={"tool": "notes-mcp.add_note", "arguments": {"text": text}},
                headers=auth(key),
            )
            assert added.status_code == 200, added.text
            assert added.json()["status"] == "ok", added.json()["error"]
        counted = await api.client.post(
            "/v1/tools/call",
            json={"tool": "notes-mcp.count_notes", "arguments": {}},
            headers=auth(key),
        )
        assert counted.json()["result"]["count"] == 2, counted.json()

        # A version whose definitions the server does not serve: the upgrade fails and the
        # installed version stays.
        manifest["version"] = "1.0.1"
        manifest["tools"][0]["description"] = "Not what the server says."
        commit(repo, manifest, "drifted")
        assert (await imported(api, key, {"repo": f"file://{repo}"}))["state"] == "published"
        upgrade = await api.client.post(
            "/v1/marketplace/installs", json={"package": "notes-mcp"}, headers=auth(key)
        )
        assert upgrade.status_code == 201, upgrade.text
        assert upgrade.json()["state"] == "installed" and upgrade.json()["version"] == "1.0.0"
        assert upgrade.json()["failure"]["code"] == "tool_mismatch"
    finally:
        server.stop()

    # The server gone: an install cannot be checked.
    await api.client.delete("/v1/marketplace/installs/notes-mcp", headers=auth(key))
    again = await api.client.post(
        "/v1/marketplace/installs",
        json={"package": "notes-mcp", "version": "1.0.0"},
        headers=auth(key),
    )
    assert again.json()["state"] == "failed", again.json()
    assert again.json()["failure"]["code"] == "server_unreachable"


async def test_a_run_whose_package_is_uninstalled_while_it_waits_gets_tool_uninstalled(
    api: Api, tmp_path: Path
) -> None:
    key = await enterprise_key(api)
    await published(api, key, tmp_path, "weather")
    installed = await api.client.post(
        "/v1/marketplace/installs", json={"package": "weather-demo"}, headers=auth(key)
    )
    assert installed.status_code == 201, installed.text
    await api.settle()
    agent = await api.client.post(
        "/v1/agents",
        json={"name": "alerts", "instructions": "Alert.", "tools": ["weather-demo.alert"]},
        headers=auth(key),
    )
    assert agent.status_code == 201, agent.text
    alert = '/tool weather-demo.alert {"city": "Lyon", "message": "storm"}'
    thread = await new_thread(api, key)
    started = await api.client.post(
        "/v1/runs",
        json={"thread_id": thread, "input": alert, "agent_id": agent.json()["id"]},
        headers=auth(key),
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]

    # The dangerous tool waits for an approval; meanwhile its package is uninstalled.
    async def waiting() -> Any:
        queue = (await api.client.get("/v1/approvals", headers=auth(key))).json()["data"]
        return next((a for a in queue if a["run_id"] == run_id), None)

    approval = await eventually(waiting, "the run's approval")
    gone = await api.client.delete("/v1/marketplace/installs/weather-demo", headers=auth(key))
    assert gone.status_code == 204
    answered = await api.client.post(
        f"/v1/approvals/{approval['id']}/approve", json={}, headers=auth(key)
    )
    assert answered.status_code == 200, answered.text

    await wait_for_run(api, key, run_id)
    (completed,) = of_type(await run_events(api, key, run_id), "tool.completed")
    receipt = completed["data"]["receipt"]
    assert receipt["status"] == "error" and receipt["error"].startswith("tool_uninstalled")
