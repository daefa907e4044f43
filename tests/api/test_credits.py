"""A tenant's credits go down as its runs complete, bootstrap shows the real balance, and a
tenant with none left is refused work (the rule lives in nome_core/accounts and is decided
with the run's creation)."""

from __future__ import annotations

from nome_core.accounts.plans import plan_of
from tests.api.test_errors import assert_error
from tests.api.test_runs import finished_run, new_thread
from tests.conftest import Api, auth

# A deep run costs 5 credits per 1,000 tokens; its input is echoed back, so 50,000 words
# in make 100,000 tokens: 500 credits, half of the free plan's 1,000.
CREDIT_DETAILS = frozenset({"required", "available"})
HALF_OF_FREE = " ".join(["a"] * 50_000)


async def balance(api: Api, key: str) -> int:
    await api.settle()
    body = (await api.client.get("/v1/bootstrap", headers=auth(key))).json()
    return int(body["credits"]["balance"])


async def test_bootstrap_reports_the_plans_credits_less_what_completed_runs_consumed(
    api: Api,
) -> None:
    key = await api.key()
    starting = plan_of("free").starting_credits
    assert await balance(api, key) == starting

    thread = await new_thread(api, key)
    first, _ = await finished_run(api, key, "a short question", thread)
    second, _ = await finished_run(api, key, "another one, a little longer", thread)
    spent = first["usage"]["credits"] + second["usage"]["credits"]

    assert spent >= 2
    assert await balance(api, key) == starting - spent


async def test_the_balance_survives_a_rebuild_of_the_read_models(api: Api) -> None:
    key = await api.key()
    thread = await new_thread(api, key)
    run, _ = await finished_run(api, key, "one two three", thread)
    before = await balance(api, key)

    for projection in api.runtime.read_models.all:
        api.runtime.runner.request_rebuild(projection.name)
    await api.settle()

    assert before == plan_of("free").starting_credits - run["usage"]["credits"]
    assert await balance(api, key) == before


async def test_a_tenant_with_no_credits_left_is_refused_runs_with_402_and_nothing_appended(
    api: Api,
) -> None:
    key = await api.key()
    thread = await new_thread(api, key)
    for _ in range(2):
        run, _ = await finished_run(api, key, HALF_OF_FREE, thread, tier="deep")
        assert run["usage"]["credits"] == 500
    assert await balance(api, key) == 0
    head = api.runtime.store.head()

    refused = await api.client.post(
        "/v1/runs", json={"thread_id": thread, "input": "one more"}, headers=auth(key)
    )

    body = assert_error(refused, 402, "insufficient_credits", details=CREDIT_DETAILS)
    assert (body["required"], body["available"]) == (1, 0)
    assert api.runtime.store.head() == head
    chat = await api.client.post("/v1/chat", json={"input": "and a chat"}, headers=auth(key))
    assert_error(chat, 402, "insufficient_credits", details=CREDIT_DETAILS)
