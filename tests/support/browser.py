"""A real NOME server and Debian's Chromium for the console's browser tests and screenshots.

The server is `bench.console.serving`: API, projector and worker on a free port in a thread,
on the test Postgres and Redis with a schema and key prefix of its own. Keys, threads and
runs are made over HTTP, as any client would; only the long run is sealed straight into the
log (`bench.console.seed_run`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.console import (
    KEY_STORAGE,
    new_key,
    scratch_settings,
    seed_run,
    serving,
    wait_for_key,
    wait_for_run,
)
from nome_api.settings import Settings
from tests.support.processes import eventually

# A safety bound for what the server must do on its own; nothing asserts how long it takes.
EVENTUALLY_S = 30.0
MATH_INPUT = '/tool math.evaluate {"expression": "6*7"}\nwhat is six times seven'
# http.fetch needs an approval by default; once approved it is refused (a loopback address)
# and the run completes with an error receipt, without any network.
FETCH_INPUT = '/tool http.fetch {"url": "http://127.0.0.1:9/"}\nfetch it please'
VIEWPORT = {"width": 1366, "height": 820}


class Nome:
    """A running server, its bootstrap admin key, and the HTTP calls the tests need."""

    def __init__(self, url: str, settings: Settings, admin_key: str) -> None:
        self.url = url
        self.settings = settings
        self.admin_key = admin_key
        self.http = httpx.Client(base_url=url, timeout=30)

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()

    def key(self, *roles: str) -> str:
        """A new key of the admin's tenant with these roles, once it works."""
        created = self.call(
            "POST", "/v1/admin/keys", json={"name": "-".join(roles), "roles": roles}
        )
        wait_for_key(self.url, created["key"])
        return str(created["key"])

    def thread(self, title: str = "console test") -> str:
        return str(self.call("POST", "/v1/threads", json={"title": title})["id"])

    def run(self, text: str) -> dict[str, Any]:
        """A new run of the default (scripted) agent on a new thread."""
        return self.call("POST", "/v1/runs", json={"thread_id": self.thread(), "input": text})  # type: ignore[no-any-return]

    def eventually(self, probe: Any, what: str) -> Any:
        return eventually(probe, what=what, limit=EVENTUALLY_S, every=0.05)

    def finished(self, run_id: str) -> dict[str, Any]:
        def probe() -> Any:
            # A run is listed a moment after it is created (the read model follows the log).
            response = self.http.get(
                f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {self.admin_key}"}
            )
            return (
                response.status_code == 200
                and response.json()["status"] == "completed"
                and (response.json())
            )

        return self.eventually(probe, f"run {run_id} to complete")  # type: ignore[no-any-return]

    def pending_approval(self, run_id: str) -> dict[str, Any]:
        def probe() -> Any:
            queue = self.call("GET", "/v1/approvals", params={"status": "pending", "limit": 200})
            return next((a for a in queue["data"] if a["run_id"] == run_id), None)

        return self.eventually(probe, f"an approval of run {run_id}")  # type: ignore[no-any-return]

    def long_run(self, events: int) -> str:
        """A finished run of `events` events sealed straight into the log, once it is listed."""
        tenant_id = self.call("GET", "/v1/bootstrap")["tenant"]["id"]
        run_id = seed_run(self.settings, tenant_id, self.thread("long run"), events=events)
        wait_for_run(self.url, self.admin_key, run_id)
        return run_id


@contextmanager
def nome_server() -> Iterator[Nome]:
    key = new_key()
    settings = scratch_settings(bootstrap_admin_key=key)
    with serving(settings) as url:
        wait_for_key(url, key)
        nome = Nome(url, settings, key)
        try:
            yield nome
        finally:
            nome.http.close()


def signed_in(browser: Any, nome: Nome, key: str, hash_: str = "#/runs", **options: Any) -> Any:
    """A new tab (its own sessionStorage) that has signed in with `key` on `hash_`."""
    context = browser.new_context(viewport=VIEWPORT, **options)
    context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page = context.new_page()
    page.goto(f"{nome.url}/console{hash_}")
    page.locator("#principal").wait_for()
    return page
