"""The console's page and assets (API.md §12) are served by NOME itself, without a key, with
a policy that lets only the page's own scripts run."""

from __future__ import annotations

import re

from nome_api.routes.console import CONSOLE_DIR
from tests.support.api import Api


async def test_the_console_page_is_served_without_a_key_under_a_strict_policy(api: Api) -> None:
    for path in ("/console", "/console/", "/console/index.html"):
        response = await api.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "<main" in response.text
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_every_asset_the_page_names_is_served_and_every_module_is_preloaded(
    api: Api,
) -> None:
    page = (await api.client.get("/console")).text
    named = set(re.findall(r'(?:href|src)="(/console/[^"]+)"', page))
    modules = {f"/console/js/{p.name}" for p in (CONSOLE_DIR / "js").glob("*.js")}
    assert modules <= named
    for path in named:
        response = await api.client.get(path)
        assert response.status_code == 200, path
        expected = "text/css" if path.endswith(".css") else "javascript"
        assert expected in response.headers["content-type"], path


async def test_a_missing_asset_is_the_contracts_404_and_the_pages_are_not_in_the_schema(
    api: Api,
) -> None:
    response = await api.client.get("/console/js/missing.js")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    schema = (await api.client.get("/schema/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/console")]
    assert "/v1/stream-tokens" in schema["paths"]
