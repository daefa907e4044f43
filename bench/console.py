"""The console's first screen on a long run (issue 15): a 50,000-event run is sealed straight
into the log, its timeline is opened in headless Chromium, and the figure is the time from
the start of the page's navigation to the first timeline rows painted.

    python -m bench.console [--events 50000] [--loads 5]

A benchmark figure, not a test: it prints the median of several cold loads (a fresh browser
context each: no cache, no session) and the spread. It needs the test PostgreSQL and Redis
(`NOME_TEST_DATABASE_URL`, `NOME_TEST_REDIS_URL`), Debian's `/usr/bin/chromium` and the
`playwright` package (the dev extra).

The long run is sealed exactly as the application seals events (ids, times, hash chain) and
inserted in batches: the scripted provider coalesces its deltas, so no real run reaches
50,000 events quickly. It is created finished (no `run.admitted` on its thread, so no worker
picks it up), and its recorded answer is not the scripted model's: verifying it diverges.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import redis
import uvicorn

from nome_api.app import create_app
from nome_api.keyring import new_secret
from nome_api.logging import configure
from nome_api.settings import Settings
from nome_core.clock import SystemClock
from nome_core.events import Client, Draft, Head, Meta, seal
from nome_core.runs.events import (
    AgentSnapshot,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunCreated,
    RunStarted,
    Usage,
)
from nome_core.runs.scripted import MODEL
from nome_core.storage.store import EventStore

PG_URL = os.environ.get("NOME_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NOME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY_STORAGE = "nome.console.key"  # the sessionStorage key of js/main.js
FIRST_SCREEN_MARK = "nome:timeline-first-screen"  # the mark of js/timeline.js
# Safety bounds only: how long a server may take to start, a page to show its first screen.
START_LIMIT_S = 60.0
PAGE_LIMIT_MS = 60_000
# ~40 characters per delta: the size of a streamed token group from a real model.
_DELTA = "lorem ipsum dolor sit amet, consectetur "


def new_key() -> str:
    """A well-formed API key: `nome_sk_` + 43 url-safe characters."""
    return "nome_sk_" + secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_settings(**changes: Any) -> Settings:
    """Settings on the test Postgres and Redis with a schema and key prefix of their own."""
    schema = f"c_{uuid.uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "database_url": PG_URL,
        "database_schema": schema,
        "redis_url": REDIS_URL,
        "redis_prefix": f"{schema}:",
        "secret_key": new_secret(),
        "log_level": "warning",
        **changes,
    }
    return Settings(**values)


def drop(settings: Settings) -> None:
    """Remove what a server on scratch settings left: its schema and its keys."""
    store = EventStore(settings.database_url, schema=settings.database_schema, create_table=False)
    try:
        store.drop()
    finally:
        store.close()
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=settings.redis_prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])
    client.close()


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """NOME (API, projector and worker) on a free port in a thread of this process: its URL.
    The schema and keys are dropped afterwards."""
    configure(settings.log_format, settings.log_level)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="nome-console-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the NOME server did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        drop(settings)


def wait_for_key(url: str, key: str) -> None:
    """A key works once the projector has put it in the read model."""
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/bootstrap", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200:
            return
        time.sleep(0.05)
    raise RuntimeError("the key never worked")


def seed_run(
    settings: Settings, tenant_id: str, thread_id: str, *, events: int, batch: int = 2000
) -> str:
    """A completed run of exactly `events` events (created, started, deltas, message
    completed, run completed) written straight into the log: its id."""
    if events < 5:
        raise ValueError("a recorded run needs at least 5 events")
    clock = SystemClock()
    run_id, message_id, work_item = clock.new_id(), clock.new_id(), clock.new_id()
    deltas = events - 4
    text = _DELTA * deltas
    drafts: list[Any] = [
        RunCreated(
            input="bench: a recorded run of many deltas",
            agent_id=clock.new_id(),
            tier="standard",
            domain_hints=[],
            client=Client(surface="bench"),
            agent=AgentSnapshot(provider="scripted", model=MODEL, instructions="", tools=[]),
            creator_roles=["admin"],
        ),
        RunStarted(model=MODEL),
        *(
            Draft(MessageDelta(message_id=message_id, text=_DELTA), work_item)
            for _ in range(deltas)
        ),
        Draft(MessageCompleted(message_id=message_id, role="assistant", content=text), work_item),
        RunCompleted(
            usage=Usage(input_tokens=7, output_tokens=len(text.split()), credits=1), output=text
        ),
    ]
    sealed = seal(
        drafts,
        stream_id=run_id,
        head=Head(),
        tenant_id=tenant_id,
        thread_id=thread_id,
        run_id=run_id,
        meta=Meta(principal="bench"),
        clock=clock,
    )
    store = EventStore(settings.database_url, schema=settings.database_schema, create_table=False)
    try:
        for start in range(0, len(sealed), batch):
            store.insert(sealed[start : start + batch])
    finally:
        store.close()
    return run_id


def wait_for_run(url: str, key: str, run_id: str) -> None:
    """The run is in the runs read model (its page reads GET /v1/runs/{id})."""
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/runs/{run_id}", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200 and response.json()["status"] == "completed":
            return
        time.sleep(0.05)
    raise RuntimeError("the seeded run never reached the read model")


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, with a fresh profile (Playwright makes one per launch)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def first_screen_ms(url: str, key: str, run_id: str, *, loads: int = 5) -> list[float]:
    """Milliseconds from navigation start to the first timeline rows painted, for `loads`
    cold loads of the run's page (each in a fresh browser context)."""
    from playwright.sync_api import sync_playwright

    figures: list[float] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for _ in range(loads):
                context = browser.new_context(viewport={"width": 1366, "height": 820})
                context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r});")
                page = context.new_page()
                page.goto(f"{url}/console#/runs/{run_id}")
                page.wait_for_selector(".vlist[data-first-screen=painted]", timeout=PAGE_LIMIT_MS)
                figures.append(
                    page.evaluate(
                        f"performance.getEntriesByName({FIRST_SCREEN_MARK!r})[0].startTime"
                    )
                )
                context.close()
        finally:
            browser.close()
    return figures


def first_page_ms(url: str, key: str, run_id: str, *, loads: int = 5) -> list[float]:
    """Milliseconds for the run's first page of events over plain HTTP, the request the
    first screen waits on: the baseline the page's figure is set against."""
    figures: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(loads):
            started = time.perf_counter()
            response = client.get(f"/v1/runs/{run_id}/events", params={"after": 0, "limit": 200})
            response.raise_for_status()
            figures.append((time.perf_counter() - started) * 1000)
    return figures


class Figures(NamedTuple):
    page: list[float]
    first_page: list[float]


def measure(events: int = 50_000, loads: int = 5) -> Figures:
    """Serve NOME on scratch settings, seed a run of `events` events, measure its page and
    the events request it waits on."""
    key = new_key()
    settings = scratch_settings(bootstrap_admin_key=key)
    with serving(settings) as url:
        wait_for_key(url, key)
        headers = {"Authorization": f"Bearer {key}"}
        boot = httpx.get(f"{url}/v1/bootstrap", headers=headers).json()
        thread = httpx.post(f"{url}/v1/threads", json={"title": "bench"}, headers=headers)
        run_id = seed_run(settings, boot["tenant"]["id"], thread.json()["id"], events=events)
        wait_for_run(url, key, run_id)
        return Figures(
            page=first_screen_ms(url, key, run_id, loads=loads),
            first_page=first_page_ms(url, key, run_id, loads=loads),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    figures = measure(args.events, args.loads)
    page, first_page = statistics.median(figures.page), statistics.median(figures.first_page)
    print(
        f"console first screen, {args.events:,}-event run: "
        f"median {page:.0f} ms over {len(figures.page)} cold loads "
        f"(min {min(figures.page):.0f}, max {max(figures.page):.0f}; target < 1000 ms); "
        f"its first events page alone over HTTP: median {first_page:.0f} ms, "
        f"{page / first_page:.2f}x"
    )


if __name__ == "__main__":
    main()
