"""Screenshots of each console view for docs/console/, made against a real server with a few
runs in it. Run by hand after changing the console:

    .venv/bin/python -m tests.browser.screenshots [OUT_DIR]

It needs what the browser tests need (the test Postgres and Redis, Debian's chromium).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from bench.console import launch
from tests.support.browser import FETCH_INPUT, MATH_INPUT, Nome, nome_server, signed_in

ROOT = Path(__file__).resolve().parents[2]
NOTE_INPUT = (
    '/tool math.evaluate {"expression": "(17 + 4) * 2"}\n'
    '/tool http.fetch {"url": "http://127.0.0.1:9/status"}\n'
    '/tool thread.note {"text": "checked the status page"}\n'
    "what is the answer, and is the status page up?"
)


def populate(nome: Nome) -> dict[str, Any]:
    """A workspace with runs in every state: finished, waiting, cancelled, and one that
    called three tools, one of them after an approval."""
    nome.call("PUT", "/v1/tools/policies/clock.now", json={"approval": "admin"})
    shown = nome.run(NOTE_INPUT)
    approval = nome.pending_approval(shown["id"])
    nome.call(
        "POST",
        f"/v1/approvals/{approval['id']}/approve",
        json={"reason": "the status page is ours"},
    )
    nome.finished(shown["id"])
    for _ in range(2):
        nome.finished(nome.run(MATH_INPUT)["id"])
    cancelled = nome.run(FETCH_INPUT)
    nome.pending_approval(cancelled["id"])
    nome.call("POST", f"/v1/runs/{cancelled['id']}/cancel", json={"reason": "not needed"})
    waiting = nome.run(FETCH_INPUT)
    nome.pending_approval(waiting["id"])
    admin_tier = nome.run("/tool clock.now {}\nwhat time is it?")
    nome.pending_approval(admin_tier["id"])
    long_run = nome.long_run(50_000)
    return {"shown": shown["id"], "waiting": waiting["id"], "long": long_run}


def settle(page: Page) -> None:
    """Let the live stream connect and the countdowns tick once before the picture."""
    page.wait_for_timeout(700)


def shoot(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with nome_server() as nome, sync_playwright() as playwright:
        runs = populate(nome)
        browser = launch(playwright)

        context = browser.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        page.goto(f"{nome.url}/console")
        page.get_by_label("API key").fill("nome_sk_…")
        page.screenshot(path=out / "sign-in.png")
        context.close()

        page = signed_in(browser, nome, nome.admin_key)
        page.locator("table.runs tbody tr").nth(5).wait_for()
        settle(page)
        page.screenshot(path=out / "runs.png")

        page.goto(f"{nome.url}/console#/runs/{runs['shown']}")
        timeline = page.get_by_role("listbox", name="Run timeline")
        timeline.get_by_role("option").nth(3).click()
        settle(page)
        page.screenshot(path=out / "timeline.png", full_page=True)

        page.get_by_role("button", name="Verify", exact=True).click()
        page.get_by_role("button", name="Audit verify", exact=True).click()
        page.get_by_role("button", name="Replay", exact=True).click()
        page.locator(".replay[data-state=done]").wait_for()
        settle(page)
        page.screenshot(path=out / "replay-verify.png", full_page=True)

        page.goto(f"{nome.url}/console#/runs/{runs['long']}")
        page.locator(".vlist[data-first-screen=painted]").wait_for()
        page.get_by_role("button", name="Verify", exact=True).click()
        page.locator(".results .result").wait_for()
        page.get_by_role("listbox", name="Run timeline").focus()
        page.keyboard.press("End")
        settle(page)
        page.screenshot(path=out / "long-run-divergence.png", full_page=True)

        page.goto(f"{nome.url}/console#/approvals")
        page.locator(".approval").nth(1).wait_for()
        settle(page)
        page.screenshot(path=out / "approvals.png")

        page.goto(f"{nome.url}/console#/connectors")
        page.get_by_text("There are no connectors").wait_for()
        page.screenshot(path=out / "connectors.png")
        page.context.close()

        dark = signed_in(
            browser, nome, nome.admin_key, f"#/runs/{runs['waiting']}", color_scheme="dark"
        )
        dark.locator(".pending-approvals .approval").wait_for()
        settle(dark)
        dark.screenshot(path=out / "timeline-dark.png", full_page=True)
        dark.context.close()
        browser.close()


if __name__ == "__main__":
    shoot(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "console")
