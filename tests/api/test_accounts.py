"""Accounts over HTTP (API.md §6): the platform operator's routes, the credits ledger with
its reservations, billing state, guardrails, usage and downloads."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from nome_api.settings import Settings
from nome_core.tenants.plans import plan_of
from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.api_runs import finished_run, new_thread, post_run
from tests.support.errors import assert_error

CREDIT_DETAILS = frozenset({"required", "available"})
LIMIT_DETAILS = frozenset({"limit", "current"})
EXAMPLE_DOWNLOADS = Path(__file__).parents[2] / "examples" / "downloads.json"
# What a run of each tier reserves: the most it can cost.
MOST = {"fast": 10, "standard": 20, "deep": 50}


async def account(api: Api, key: str) -> dict[str, Any]:
    await api.settle()
    response = await api.client.get("/v1/account", headers=auth(key))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def platform(api: Api, method: str, path: str, key: str, **body: Any) -> httpx.Response:
    return await api.client.request(
        method, f"/v1/platform{path}", json=body or None, headers=auth(key)
    )


async def set_limits(api: Api, operator: str, tenant: str, **limits: Any) -> None:
    response = await platform(
        api, "PUT", f"/tenants/{tenant_id_for(tenant)}/limits", operator, **limits
    )
    assert response.status_code == 200, response.text


# -- the platform operator ----------------------------------------------------------------


async def test_the_operator_creates_a_tenant_on_a_plan_with_its_starting_credits(api: Api) -> None:
    operator = await api.platform_key()

    created = await platform(api, "POST", "/tenants", operator, name="initech", plan="pro")

    assert created.status_code == 201, created.text
    tenant = created.json()
    assert set(tenant) == {"id", "name", "plan", "billing", "entitlements", "limits", "created_at"}
    assert (tenant["id"], tenant["name"], tenant["plan"]) == (
        tenant_id_for("initech"),
        "initech",
        "pro",
    )
    assert tenant["billing"] == {"status": "active", "period_end": None, "grace_until": None}
    assert tenant["entitlements"] == sorted(plan_of("pro").entitlements)
    assert tenant["limits"] == msgspec.structs.asdict(plan_of("pro").limits)
    again = await platform(api, "POST", "/tenants", operator, name="initech")
    assert_error(again, 409, "conflict")
    await api.settle()
    listed = (await platform(api, "GET", "/tenants", operator)).json()
    assert tenant_id_for("initech") in [t["id"] for t in listed["data"]]
    key = await api.key("initech")
    assert (await account(api, key))["credits"]["balance"] == plan_of("pro").starting_credits


async def test_a_tenants_own_admin_gets_403_on_every_platform_route(api: Api) -> None:
    admin = await api.key("acme", roles=("admin",))
    acme = tenant_id_for("acme")
    attempts = [
        ("GET", "/tenants", {}),
        ("POST", "/tenants", {"name": "mine"}),
        ("GET", f"/tenants/{acme}", {}),
        ("PUT", f"/tenants/{acme}/plan", {"plan": "enterprise"}),
        ("POST", f"/tenants/{acme}/credits", {"amount": 10**6, "kind": "paid", "reason": "me"}),
        ("PUT", f"/tenants/{acme}/billing", {"status": "active"}),
        ("PUT", f"/tenants/{acme}/entitlements", {"grant": ["private_packages"]}),
        ("PUT", f"/tenants/{acme}/limits", {"max_threads": 10**6}),
    ]
    head = api.runtime.store.head()

    for method, path, body in attempts:
        assert_error(await platform(api, method, path, admin, **body), 403, "forbidden")

    assert api.runtime.store.head() == head


async def test_a_platform_key_reaches_no_tenant_route(api: Api) -> None:
    operator = await api.platform_key()

    for path in ["/v1/threads", "/v1/account", "/v1/runs"]:
        assert_error(await api.client.get(path, headers=auth(operator)), 403, "forbidden")


async def test_plan_entitlements_and_limits_changes_show_in_the_tenants_account(api: Api) -> None:
    operator, key = await api.platform_key(), await api.key("acme")
    acme = tenant_id_for("acme")

    plan = await platform(api, "PUT", f"/tenants/{acme}/plan", operator, plan="pro")
    assert plan.json()["plan"] == "pro"
    granted = await platform(
        api,
        "PUT",
        f"/tenants/{acme}/entitlements",
        operator,
        grant=["private_packages"],
        revoke=["webhooks"],
    )
    assert granted.json()["entitlements"] == [
        "connectors",
        "core",
        "marketplace",
        "private_packages",
    ]
    limits = await platform(api, "PUT", f"/tenants/{acme}/limits", operator, max_threads=7)
    assert limits.json()["limits"]["max_threads"] == 7
    assert limits.json()["limits"]["max_installs"] == plan_of("pro").limits.max_installs
    back = await platform(api, "PUT", f"/tenants/{acme}/limits", operator, max_threads=None)
    assert back.json()["limits"]["max_threads"] == plan_of("pro").limits.max_threads

    mine = await account(api, key)
    assert mine["plan"] == "pro"
    assert mine["entitlements"] == ["connectors", "core", "marketplace", "private_packages"]
    boot = (await api.client.get("/v1/bootstrap", headers=auth(key))).json()
    assert boot["entitlements"] == mine["entitlements"] and boot["limits"] == mine["limits"]


async def test_bad_platform_bodies_are_422_and_unknown_tenants_404(api: Api) -> None:
    operator = await api.platform_key()
    await api.key("acme")
    acme = tenant_id_for("acme")
    bad = [
        ("PUT", f"/tenants/{acme}/plan", {"plan": "gold"}),
        ("POST", f"/tenants/{acme}/credits", {"amount": 0, "kind": "paid", "reason": "x"}),
        ("POST", f"/tenants/{acme}/credits", {"amount": 5, "kind": "free", "reason": "x"}),
        (
            "POST",
            f"/tenants/{acme}/credits",
            {"amount": 5, "kind": "paid", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
        ),
        ("PUT", f"/tenants/{acme}/billing", {"status": "frozen"}),
        ("PUT", f"/tenants/{acme}/entitlements", {"grant": ["core"], "revoke": ["core"]}),
        ("PUT", f"/tenants/{acme}/limits", {"max_threads": -1}),
    ]
    for method, path, body in bad:
        assert_error(
            await platform(api, method, path, operator, **body),
            422,
            "validation_failed",
            issues=True,
        )
    nobody = "00000000-0000-4000-8000-000000000000"
    for method, path, body in [
        ("GET", f"/tenants/{nobody}", {}),
        ("PUT", f"/tenants/{nobody}/plan", {"plan": "pro"}),
        ("POST", f"/tenants/{nobody}/credits", {"amount": 5, "kind": "paid", "reason": "x"}),
    ]:
        assert_error(await platform(api, method, path, operator, **body), 404, "not_found")


# -- the credits ledger -------------------------------------------------------------------


async def test_a_grant_adds_to_the_balance_once_per_idempotency_key(api: Api) -> None:
    operator, key = await api.platform_key(), await api.key("acme")
    before = (await account(api, key))["credits"]
    path = f"/v1/platform/tenants/{tenant_id_for('acme')}/credits"
    body = {"amount": 250, "kind": "paid", "reason": "invoice 42"}
    headers = auth(operator, **{"Idempotency-Key": "invoice-42"})

    first = await api.client.post(path, json=body, headers=headers)
    again = await api.client.post(path, json=body, headers=headers)

    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json()
    grant = first.json()
    assert (grant["amount"], grant["kind"], grant["reason"]) == (250, "paid", "invoice 42")
    after = (await account(api, key))["credits"]
    assert after["granted"] == before["granted"] + 250
    assert after["balance"] == before["balance"] + 250
    ledger = (await api.client.get("/v1/account/ledger", headers=auth(key))).json()
    assert ledger["data"][0]["type"] == "grant" and ledger["data"][0]["grant_id"] == grant["id"]
    assert [e["type"] for e in ledger["data"]].count("grant") == 2  # and the plan's


async def test_a_run_reserves_its_tiers_most_then_consumes_its_cost_and_releases_the_rest(
    api: Api,
) -> None:
    key = await api.key()
    starting = plan_of("free").starting_credits

    run, _ = await finished_run(api, key, "a short question", tier="standard")

    credits = (await account(api, key))["credits"]
    cost = run["usage"]["credits"]
    assert 1 <= cost < MOST["standard"]
    assert credits == {
        "balance": starting - cost,
        "available": starting - cost,
        "reserved": 0,
        "granted": starting,
        "consumed": cost,
        "expired": 0,
    }
    ledger = (await api.client.get("/v1/account/ledger", headers=auth(key))).json()["data"]
    of_run = [(e["type"], e["amount"]) for e in ledger if e["run_id"] == run["id"]]
    # Newest first.
    assert of_run == [
        ("release", MOST["standard"] - cost),
        ("consume", cost),
        ("reserve", MOST["standard"]),
    ]


async def test_the_balance_survives_a_rebuild_of_the_read_models(api: Api) -> None:
    key = await api.key()
    await finished_run(api, key, "one two three")
    before = await account(api, key)

    for projection in api.runtime.read_models.all:
        api.runtime.runner.request_rebuild(projection.name)
    await api.settle()

    assert await account(api, key) == before


async def test_a_run_the_available_balance_cannot_cover_is_402_and_appends_nothing(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    # No run may start: every accepted run keeps its reservation.
    await set_limits(api, operator, "acme", max_concurrent_runs=0)
    thread = await new_thread(api, key)
    for _ in range(plan_of("free").starting_credits // MOST["deep"]):
        accepted = await post_run(api, key, thread, "hold", tier="deep", if_busy="enqueue")
        assert accepted.status_code == 201, accepted.text
    head = api.runtime.store.head()

    refused = await post_run(api, key, thread, "one more", tier="fast", if_busy="enqueue")

    body = assert_error(refused, 402, "insufficient_credits", details=CREDIT_DETAILS)
    assert (body["required"], body["available"]) == (MOST["fast"], 0)
    chat = await api.client.post("/v1/chat", json={"input": "and a chat"}, headers=auth(key))
    assert_error(chat, 402, "insufficient_credits", details=CREDIT_DETAILS)
    assert api.runtime.store.head() == head
    credits = (await account(api, key))["credits"]
    assert (credits["available"], credits["reserved"]) == (0, plan_of("free").starting_credits)


async def test_three_times_more_concurrent_runs_than_the_balance_allows_never_overdraw(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    await set_limits(api, operator, "acme", max_concurrent_runs=0)
    allowed = plan_of("free").starting_credits // MOST["deep"]
    threads = await asyncio.gather(*(new_thread(api, key) for _ in range(3 * allowed)))

    answers = await asyncio.gather(
        *(post_run(api, key, thread, "race", tier="deep") for thread in threads)
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * allowed + [402] * (2 * allowed)
    credits = (await account(api, key))["credits"]
    assert credits["available"] == 0 and credits["reserved"] == allowed * MOST["deep"]


async def test_cancelling_a_run_that_never_started_releases_all_it_reserved(api: Api) -> None:
    operator, key = await api.platform_key(), await api.key()
    await set_limits(api, operator, "acme", max_concurrent_runs=0)
    run = (await post_run(api, key, await new_thread(api, key), "wait", tier="deep")).json()

    cancelled = await api.client.post(f"/v1/runs/{run['id']}/cancel", headers=auth(key))

    assert cancelled.status_code == 200, cancelled.text
    credits = (await account(api, key))["credits"]
    assert credits["consumed"] == 0 and credits["reserved"] == 0
    assert credits["available"] == plan_of("free").starting_credits


# -- guardrails ---------------------------------------------------------------------------


async def test_twenty_concurrent_thread_creations_against_a_limit_of_five_make_exactly_five(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    await set_limits(api, operator, "acme", max_threads=5)

    answers = await asyncio.gather(
        *(api.client.post("/v1/threads", json={}, headers=auth(key)) for _ in range(20))
    )

    assert sorted(a.status_code for a in answers) == [201] * 5 + [403] * 15
    refused = next(a for a in answers if a.status_code == 403)
    body = assert_error(refused, 403, "limit_reached", details=LIMIT_DETAILS)
    assert (body["limit"], body["current"]) == (5, 5)
    await api.settle()
    listed = (await api.client.get("/v1/threads", headers=auth(key))).json()
    assert listed["total_count"] == 5
    chat = await api.client.post("/v1/chat", json={"input": "new thread"}, headers=auth(key))
    assert_error(chat, 403, "limit_reached", details=LIMIT_DETAILS)
    # Deleting one makes room for one.
    gone = listed["data"][0]["id"]
    assert (await api.client.delete(f"/v1/threads/{gone}", headers=auth(key))).status_code == 204
    assert (await api.client.post("/v1/threads", json={}, headers=auth(key))).status_code == 201


async def test_runs_over_the_concurrency_limit_wait_pending_and_start_in_order(api: Api) -> None:
    operator, key = await api.platform_key(), await api.key()
    await set_limits(api, operator, "acme", max_concurrent_runs=0)
    threads = [await new_thread(api, key) for _ in range(3)]
    runs = [(await post_run(api, key, t, f"run {i}")).json() for i, t in enumerate(threads)]
    await api.settle()
    states = [(await api.client.get(f"/v1/runs/{r['id']}", headers=auth(key))).json() for r in runs]
    assert [s["status"] for s in states] == ["pending"] * 3

    await set_limits(api, operator, "acme", max_concurrent_runs=1)

    ended = []
    for run in runs:
        response = await api.client.get(f"/v1/runs/{run['id']}/stream", headers=auth(key))
        ended.append(
            [
                json.loads(line[6:])
                for line in response.text.splitlines()
                if line.startswith("data: ")
            ][-1]
        )
    assert [e["type"] for e in ended] == ["run.completed"] * 3
    starts = []
    for run in runs:
        events = (await api.client.get(f"/v1/runs/{run['id']}/events", headers=auth(key))).json()
        started = next(e for e in events["data"] if e["type"] == "run.started")
        end = events["data"][-1]
        starts.append((started["position"], end["position"]))
    # One at a time, oldest first: each starts after the one before it ended.
    assert all(starts[i][1] < starts[i + 1][0] for i in range(2))


# -- billing ------------------------------------------------------------------------------


async def test_a_canceled_tenant_cannot_start_work_but_reads_exports_and_deletes(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    thread = await new_thread(api, key)
    run, _ = await finished_run(api, key, "before", thread)
    response = await platform(
        api, "PUT", f"/tenants/{tenant_id_for('acme')}/billing", operator, status="canceled"
    )
    assert response.json()["billing"]["status"] == "canceled"

    assert_error(await post_run(api, key, thread, "after"), 402, "billing_inactive")
    chat = await api.client.post("/v1/chat", json={"input": "hi"}, headers=auth(key))
    assert_error(chat, 402, "billing_inactive")
    await api.settle()
    for path in [
        f"/v1/threads/{thread}",
        f"/v1/runs/{run['id']}",
        "/v1/account",
        "/v1/account/billing",
        "/v1/account/usage",
        "/v1/audit/export",
    ]:
        assert (await api.client.get(path, headers=auth(key))).status_code == 200, path
    billing = (await api.client.get("/v1/account/billing", headers=auth(key))).json()
    assert billing == {
        "plan": "free",
        "status": "canceled",
        "period_end": None,
        "grace_until": None,
    }
    assert (await api.client.delete(f"/v1/threads/{thread}", headers=auth(key))).status_code == 204


@pytest.mark.parametrize(
    ("period_end", "works"),
    [("2000-01-01T00:00:00Z", False), ("2999-01-01T00:00:00Z", True)],
    ids=["past its grace", "within its grace"],
)
async def test_a_past_due_tenant_works_until_its_grace_ends(
    api: Api, period_end: str, works: bool
) -> None:
    operator, key = await api.platform_key(), await api.key()
    thread = await new_thread(api, key)
    response = await platform(
        api,
        "PUT",
        f"/tenants/{tenant_id_for('acme')}/billing",
        operator,
        status="past_due",
        period_end=period_end,
    )
    # NOME_BILLING_GRACE_DAYS: 7 by default.
    assert response.json()["billing"]["grace_until"] == period_end[:8] + "08T00:00:00.000000Z"

    answer = await post_run(api, key, thread, "still?")

    assert answer.status_code == (201 if works else 402), answer.text


# -- usage and downloads ------------------------------------------------------------------


async def test_usage_is_the_sum_over_the_tenants_runs(api: Api) -> None:
    key = await api.key()
    runs = [
        (await finished_run(api, key, "one two", tier="fast"))[0],
        (await finished_run(api, key, "three four five", tier="deep"))[0],
        (await finished_run(api, key, "six", tier="deep"))[0],
    ]
    await api.settle()

    usage = (await api.client.get("/v1/account/usage", headers=auth(key))).json()

    for tier in ("fast", "deep"):
        mine = [r for r in runs if r["tier"] == tier]
        assert usage["by_tier"][tier] == {
            "runs": len(mine),
            "input_tokens": sum(r["usage"]["input_tokens"] for r in mine),
            "output_tokens": sum(r["usage"]["output_tokens"] for r in mine),
            "credits": sum(r["usage"]["credits"] for r in mine),
        }
    (day,) = usage["by_day"]
    assert day["runs"] == 3 and day["credits"] == sum(r["usage"]["credits"] for r in runs)
    assert usage["credits"]["consumed"] == day["credits"]
    assert sum(a["runs"] for a in usage["by_agent"]) == 3
    only_tiers = (await api.client.get("/v1/account/usage?group_by=tier", headers=auth(key))).json()
    assert set(only_tiers) == {"credits", "by_tier"}
    empty = (
        await api.client.get("/v1/account/usage?start=2000-01-01&end=2000-01-31", headers=auth(key))
    ).json()
    assert empty["by_day"] == [] and empty["by_tier"] == {}
    bad = await api.client.get("/v1/account/usage?start=yesterday", headers=auth(key))
    assert_error(bad, 400, "bad_request", issues=True)


@pytest.fixture
def downloads_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, downloads_file=str(EXAMPLE_DOWNLOADS))


@pytest.fixture
async def api_with_downloads(downloads_settings: Settings) -> Any:
    from litestar.testing import AsyncTestClient

    from nome_api.app import create_app
    from nome_api.runtime import Runtime

    runtime = Runtime(downloads_settings)
    async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
        yield Api(client, runtime)


async def test_downloads_list_the_manifests_releases_newest_first_filtered(
    api_with_downloads: Api,
) -> None:
    api = api_with_downloads
    key = await api.key()
    manifest = json.loads(EXAMPLE_DOWNLOADS.read_text())

    everything = (await api.client.get("/v1/account/downloads", headers=auth(key))).json()
    mac = (
        await api.client.get(
            "/v1/account/downloads?surface=desktop&platform=macos-arm64", headers=auth(key)
        )
    ).json()

    assert len(everything) == len(manifest["releases"])
    assert [r["version"] for r in mac] == ["1.4.0", "1.3.2"]
    assert set(mac[0]) == {"surface", "platform", "version", "url", "sha256", "size", "released_at"}


@pytest.mark.parametrize(
    ("version", "available", "required"),
    [
        ("1.4.0", False, False),
        ("1.3.10", True, False),
        ("1.1.9", True, True),
        ("banana", False, False),
    ],
)
async def test_bootstrap_says_whether_the_callers_build_is_behind_or_unsupported(
    api_with_downloads: Api, version: str, available: bool, required: bool
) -> None:
    api = api_with_downloads
    key = await api.key()
    headers = auth(key, **{"X-Nome-Client-Surface": "desktop", "X-Nome-Client-Version": version})

    client = (await api.client.get("/v1/bootstrap", headers=headers)).json()["client"]

    assert client["latest_version"] == "1.4.0"
    assert (client["update_available"], client["update_required"]) == (available, required)


async def test_an_expired_grants_unspent_rest_leaves_the_balance_by_the_expiry_job(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    soon = datetime.now(UTC) + timedelta(seconds=1)
    path = f"/tenants/{tenant_id_for('acme')}/credits"
    granted = await platform(
        api,
        "POST",
        path,
        operator,
        amount=30,
        kind="promotional",
        reason="trial",
        expires_at=soon.isoformat(),
    )
    assert granted.status_code == 201, granted.text
    # Spent first, as the oldest-expiring grant: a run's cost comes out of it.
    run, _ = await finished_run(api, key, "spend a little", tier="fast")
    cost = run["usage"]["credits"]

    for _ in range(200):  # the job runs every 2 s in the worker
        credits = (await account(api, key))["credits"]
        if credits["expired"]:
            break
        await asyncio.sleep(0.05)

    assert credits["expired"] == 30 - cost
    assert credits["balance"] == plan_of("free").starting_credits
    ledger = (await api.client.get("/v1/account/ledger", headers=auth(key))).json()["data"]
    assert (ledger[0]["type"], ledger[0]["amount"]) == ("expire", 30 - cost)
    assert ledger[0]["grant_id"] == granted.json()["id"]
    assert datetime.fromisoformat(ledger[0]["at"]) >= soon


async def test_the_operators_changes_are_in_the_tenants_audit_export_and_no_one_elses(
    api: Api,
) -> None:
    operator, acme, globex = (
        await api.platform_key(),
        await api.key("acme"),
        await api.key("globex"),
    )
    acme_id = tenant_id_for("acme")
    await platform(api, "PUT", f"/tenants/{acme_id}/plan", operator, plan="pro")
    await platform(
        api,
        "PUT",
        f"/tenants/{acme_id}/billing",
        operator,
        status="past_due",
        period_end="2999-01-01T00:00:00Z",
    )
    await platform(
        api,
        "POST",
        f"/tenants/{acme_id}/credits",
        operator,
        amount=5,
        kind="paid",
        reason="goodwill",
    )

    def types(export: httpx.Response) -> list[str]:
        assert export.status_code == 200, export.text
        lines = [json.loads(line) for line in export.text.splitlines() if line.strip()]
        return [line["type"] for line in lines if "type" in line]

    mine = types(await api.client.get("/v1/audit/export", headers=auth(acme)))
    theirs = types(await api.client.get("/v1/audit/export", headers=auth(globex)))

    changes = ["tenant.plan_changed", "billing.status_changed", "credits.granted"]
    assert all(kind in mine for kind in changes)
    assert not {"tenant.plan_changed", "billing.status_changed"} & set(theirs)
    assert theirs.count("credits.granted") == 1  # globex's own starting credits


async def test_a_first_run_refused_leaves_nothing_behind_not_even_the_default_agent(
    api: Api,
) -> None:
    operator, key = await api.platform_key(), await api.key()
    thread = await new_thread(api, key)
    await platform(
        api, "PUT", f"/tenants/{tenant_id_for('acme')}/billing", operator, status="canceled"
    )
    head = api.runtime.store.head()

    assert_error(await post_run(api, key, thread, "hello"), 402, "billing_inactive")

    assert api.runtime.store.head() == head
    await api.settle()
    agents = (await api.client.get("/v1/agents", headers=auth(key))).json()
    assert agents["data"] == []
