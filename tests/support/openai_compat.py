"""A real NOME HTTP server for OpenAI's clients (API.md §10), which need a URL: API, projector
and worker on a free port in a thread (`bench.console.serving`), on the test Postgres and
Redis with a schema and key prefix of its own, and its bootstrap admin key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai

from bench.console import new_key, scratch_settings, serving, wait_for_key
from tests.support.processes import eventually

# A safety bound for what the server does on its own; nothing asserts how long it takes.
EVENTUALLY_S = 30.0


class Served:
    """A running NOME: its `/v1` base URL, the admin key, and plain HTTP calls."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.base_url = f"{url}/v1"
        self.key = key
        self.http = httpx.Client(base_url=url, timeout=EVENTUALLY_S)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **extra}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request with the admin key that must succeed: its JSON answer."""
        headers = self.headers(**kwargs.pop("headers", {}))
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def client(self, **options: Any) -> openai.OpenAI:
        """The official SDK, pointed at this server with the admin key."""
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, **options)

    def agent(self, **fields: Any) -> tuple[str, str]:
        """A new agent: its id, and a position that covers it (for X-Nome-Min-Position)."""
        response = self.http.post("/v1/agents", json=fields, headers=self.headers())
        assert response.status_code == 201, response.text
        return str(response.json()["id"]), response.headers["x-nome-position"]

    def eventually(self, probe: Any, what: str) -> Any:
        return eventually(probe, what=what, limit=EVENTUALLY_S, every=0.02)

    def run(self, run_id: str, position: str = "0") -> dict[str, Any]:
        """The run once its read model has it, as of log position `position` at least."""

        def probe() -> Any:
            headers = self.headers(**{"X-Nome-Min-Position": position})
            response = self.http.get(f"/v1/runs/{run_id}", headers=headers)
            return response.json() if response.status_code == 200 else None

        return self.eventually(probe, f"run {run_id} to be listed")  # type: ignore[no-any-return]


@contextmanager
def nome_serving(**changes: Any) -> Iterator[Served]:
    """A NOME server on scratch settings (`changes` to them), until the block ends."""
    key = new_key()
    settings = scratch_settings(bootstrap_admin_key=key, **changes)
    with serving(settings) as url:
        wait_for_key(url, key)
        served = Served(url, key)
        try:
            yield served
        finally:
            served.http.close()
