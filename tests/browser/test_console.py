"""The operator console (issue 15, API.md §12) in headless Chromium against a real server:
signing in, a run started through the API appearing live, its timeline, an approval given
in the queue while another tab watches the run complete, replay, verify, audit and export,
the role rules, and a long run that stays usable to its last event.

Debian's `chromium` driven by Playwright (Playwright's own browser download is not reachable
here); `.ci/run` installs it. Without it the whole module skips, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.console import CHROMIUM

if importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).exists():
    pytest.skip(
        f"browser tests need Playwright (the dev extra) and Chromium at {CHROMIUM} "
        "(apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.console import KEY_STORAGE, launch
from tests.support.browser import FETCH_INPUT, MATH_INPUT, VIEWPORT, Nome, nome_server, signed_in

pytestmark = pytest.mark.slow
# A bound on how long the page may take to show what the server did; not a timing assertion.
expect.set_options(timeout=20_000)
RUN_ACTIONS = ("Cancel run", "Replay", "Verify", "Audit verify", "Download export")
UNLABELLED_CONTROLS = """
[...document.querySelectorAll("input, select, textarea")]
  .filter((el) => !el.labels?.length && !el.getAttribute("aria-label"))
  .map((el) => el.outerHTML)
"""


@pytest.fixture(scope="module")
def nome() -> Iterator[Nome]:
    with nome_server() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser: Browser, nome: Nome) -> Iterator[Any]:
    """Opens signed-in tabs; fails the test if a script on any of them threw."""
    errors: list[str] = []
    opened: list[Page] = []

    def open_tab(key: str, hash_: str = "#/runs") -> Page:
        page = signed_in(browser, nome, key, hash_)
        page.on("pageerror", lambda error: errors.append(str(error)))
        opened.append(page)
        return page

    yield open_tab
    for page in opened:
        page.context.close()
    assert errors == []


def test_signing_in_keeps_the_key_in_the_tab_only_and_signing_out_forgets_it(
    browser: Browser, nome: Nome
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{nome.url}/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Views")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    page.get_by_label("API key").fill("nome_sk_" + "x" * 43)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")

    page.get_by_label("API key").fill(nome.admin_key)
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#principal")).to_contain_text("bootstrap admin")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    for landmark in ("banner", "navigation", "main"):
        expect(page.get_by_role(landmark).first).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})") == nome.admin_key
    assert context.cookies() == []
    assert nome.admin_key not in page.url
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Views")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})") is None
    context.close()


def test_a_run_started_through_the_api_appears_live_and_its_timeline_shows_every_step(
    nome: Nome, pages: Any
) -> None:
    page = pages(nome.admin_key)
    expect(page.locator("#live")).to_have_text("live")
    run = nome.run(MATH_INPUT)

    row = page.locator(f'tr[data-run="{run["id"]}"]')
    expect(row).to_contain_text("completed")
    row.get_by_role("link", name=run["id"][:8]).click()

    timeline = page.get_by_role("listbox", name="Run timeline")
    expect(timeline.get_by_role("option").first).to_contain_text("run.created")
    expect(timeline).to_contain_text("policy allow")
    expect(timeline).to_contain_text("receipt ok math.evaluate")
    expect(timeline).to_contain_text('{"value":42}')
    expect(page.locator(".run-facts")).to_contain_text("1 credit")
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    timeline.focus()
    page.keyboard.press("End")
    expect(page.locator(".detail")).to_contain_text("Usage and cost")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator(".detail")).to_contain_text("policy decision")
    expect(page.locator(".detail")).to_contain_text("Receipt")


def test_approving_in_the_queue_lets_a_run_open_in_another_tab_complete_live(
    nome: Nome, pages: Any
) -> None:
    run = nome.run(FETCH_INPUT)
    nome.pending_approval(run["id"])
    watcher = pages(nome.key("viewer"), f"#/runs/{run['id']}")
    expect(watcher.locator(".pending-approvals")).to_contain_text("http.fetch")
    expect(watcher.locator(".live-state")).to_have_text("live")

    approver = pages(nome.key("member"), "#/approvals")
    card = approver.get_by_role("article").filter(has_text=run["id"][:8])
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^(\d+ h \d\d min|\d+:\d\d)$"))
    card.get_by_label("Reason (optional)").fill("checked by the browser test")
    card.get_by_role("button", name="Approve", exact=True).press("Enter")
    expect(approver.locator("#notice")).to_contain_text("Approved: http.fetch")
    expect(card).to_have_count(0)

    timeline = watcher.get_by_role("listbox", name="Run timeline")
    expect(timeline).to_contain_text("approved by")
    expect(timeline).to_contain_text("checked by the browser test")
    expect(timeline).to_contain_text("receipt error http.fetch")
    expect(timeline).to_contain_text("run.completed")
    expect(watcher.locator(".run-facts")).to_contain_text("completed")
    expect(watcher.locator(".pending-approvals")).to_be_hidden()


def test_replay_equals_the_live_stream_and_verify_audit_and_export_agree(
    nome: Nome, pages: Any
) -> None:
    run = nome.finished(nome.run(MATH_INPUT)["id"])
    page = pages(nome.admin_key, f"#/runs/{run['id']}")

    page.get_by_role("button", name="Replay", exact=True).click()
    replay = page.locator(".replay")
    expect(replay.get_by_role("status")).to_contain_text(f"{run['event_count']} frames")
    expect(replay.get_by_role("status")).to_contain_text("identical to the live stream")
    expect(page.get_by_role("listbox", name="Replayed frames")).to_contain_text("run.completed")

    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator(".results")).to_contain_text("Verify: deterministic")
    page.get_by_role("button", name="Audit verify", exact=True).click()
    expect(page.locator(".results")).to_contain_text("hash chain intact")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download export", exact=True).click()
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    # The run's envelopes in order (an export may end with a line of its own: a checkpoint).
    envelopes = [line for line in lines if "seq" in line]
    assert [e["seq"] for e in envelopes] == list(range(1, run["event_count"] + 1))
    assert {e["run_id"] for e in envelopes} == {run["id"]}


@pytest.mark.parametrize(
    ("roles", "actions", "may_approve"),
    [
        (("viewer",), set(), False),
        (("member",), set(), True),
        (("operator",), {"Cancel run", "Replay", "Verify"}, False),
        (("auditor",), {"Audit verify", "Download export"}, False),
    ],
)
def test_each_role_sees_only_the_actions_the_server_would_allow_it(
    nome: Nome, pages: Any, roles: tuple[str, ...], actions: set[str], may_approve: bool
) -> None:
    run = nome.run(FETCH_INPUT)
    nome.pending_approval(run["id"])
    page = pages(nome.key(*roles), f"#/runs/{run['id']}")
    pending = page.locator(".pending-approvals")
    expect(pending).to_contain_text("http.fetch")

    shown = {
        name for name in RUN_ACTIONS if page.get_by_role("button", name=name, exact=True).count()
    }
    assert shown == actions
    expect(pending.get_by_role("button", name="Approve", exact=True)).to_have_count(
        1 if may_approve else 0
    )
    expect(pending.get_by_role("button", name="Deny", exact=True)).to_have_count(
        1 if may_approve else 0
    )
    if not may_approve:
        expect(pending).to_contain_text("needs the member role")


def test_a_long_run_opens_at_its_first_event_and_scrolls_to_its_last_with_few_rows_in_the_page(
    nome: Nome, pages: Any
) -> None:
    run_id = nome.long_run(5_000)
    page = pages(nome.admin_key, f"#/runs/{run_id}")
    timeline = page.get_by_role("listbox", name="Run timeline")
    expect(timeline.locator('[aria-posinset="1"]')).to_contain_text("run.created")
    expect(page.locator(".count-line")).to_have_text("5,000 events")

    timeline.focus()
    page.keyboard.press("End")
    expect(timeline.locator('[aria-posinset="5000"]')).to_contain_text("run.completed")
    expect(timeline.locator('[aria-posinset="4999"]')).to_contain_text("message.completed")
    page.get_by_label("Go to seq").fill("2500")
    page.get_by_label("Go to seq").press("Enter")
    expect(timeline.locator('[aria-posinset="2500"]')).to_contain_text("message.delta")
    assert timeline.get_by_role("option").count() < 100

    # Its recorded answer is not what the scripted model says: verify shows where.
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator(".results")).to_contain_text("Verify: diverged at seq 3")
    page.get_by_role("button", name="Show seq 3 in the timeline", exact=True).click()
    expect(timeline.locator('[aria-selected="true"]')).to_have_attribute("aria-posinset", "3")


def test_the_connectors_view_says_plainly_that_this_server_has_none(nome: Nome, pages: Any) -> None:
    page = pages(nome.admin_key, "#/connectors")
    expect(page.get_by_role("heading", name="Connectors", exact=True)).to_be_visible()
    expect(page.locator("main")).to_contain_text("There are no connectors")
    expect(page.locator("main")).to_contain_text("There are no webhook endpoints")
