"""Runs over HTTP (API.md §3): admission, chat, lists, the log, state, verify, cancel."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from typing import Any

import psycopg

from tests.support.api import Api, auth
from tests.support.api_runs import (
    MATH_INPUT,
    TIME,
    ZERO,
    finish,
    finished_run,
    new_thread,
    position,
    post_run,
    read_run,
    start_run,
)
from tests.support.env import PG_URL
from tests.support.errors import assert_error

RUN_KEYS = {
    "id",
    "thread_id",
    "agent_id",
    "status",
    "awaiting_approval",
    "tier",
    "created_at",
    "started_at",
    "ended_at",
    "event_count",
    "usage",
    "error",
}
ENVELOPE_KEYS = {
    "id",
    "type",
    "tenant_id",
    "stream_id",
    "thread_id",
    "run_id",
    "work_item_id",
    "seq",
    "position",
    "at",
    "data",
    "receipt",
}
MATH_ANSWER = 'what is six times seven\nmath.evaluate: {"value":42}'
# A run that takes many steps, so a second run posted right after it finds it unfinished.
SLOW_INPUT = "\n".join(["/tool clock.now {}"] * 25) + "\nslow one"


# -- helpers ------------------------------------------------------------------------------


async def messages_of(api: Api, key: str, thread_id: str) -> list[dict[str, Any]]:
    await api.settle()
    response = await api.client.get(f"/v1/threads/{thread_id}/messages", headers=auth(key))
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def chain_hash(envelope: dict[str, Any]) -> str:
    """The receipt hash of API.md §3, recomputed from the envelope."""
    content = {k: v for k, v in envelope.items() if k not in ("receipt", "position")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prev = envelope["receipt"]["prev_hash"] or ""
    return "sha256:" + hashlib.sha256((prev + "\n" + canonical).encode()).hexdigest()


# -- creating runs ------------------------------------------------------------------------


async def test_a_new_run_answers_201_pending_with_the_run_shape_and_its_position(
    api: Api,
) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    response = await post_run(api, key, thread_id, "hello", tier="fast", domain_hints=["travel"])
    assert response.status_code == 201, response.text
    run = response.json()
    assert set(run) == RUN_KEYS
    assert run["thread_id"] == thread_id
    assert run["status"] == "pending" and run["awaiting_approval"] is False
    assert run["tier"] == "fast"
    assert TIME.match(run["created_at"])
    assert run["started_at"] is None and run["ended_at"] is None
    assert run["event_count"] == 1
    assert run["usage"] == {"input_tokens": 0, "output_tokens": 0, "credits": 0}
    assert run["error"] is None
    events = await finish(api, key, run["id"])
    # The position of the whole commit: the run, its input in the thread, its reservation.
    assert events[0]["type"] == "run.created" and events[0]["position"] < position(response)

    assert events[0]["data"]["domain_hints"] == ["travel"]


async def test_a_finished_run_reads_back_completed_with_usage_and_its_event_count(
    api: Api,
) -> None:
    key = await api.key()
    run, events = await finished_run(api, key)
    assert set(run) == RUN_KEYS
    assert run["status"] == "completed" and run["error"] is None
    assert run["awaiting_approval"] is False
    assert run["tier"] == "standard"
    assert TIME.match(run["started_at"]) and TIME.match(run["ended_at"])
    assert run["created_at"] <= run["started_at"] <= run["ended_at"]
    assert run["event_count"] == len(events) == events[-1]["seq"]
    assert set(run["usage"]) == {"input_tokens", "output_tokens", "credits"}
    assert run["usage"]["credits"] > 0
    assert run["usage"]["output_tokens"] == len(MATH_ANSWER.split())
    assert run["usage"] == events[-1]["data"]["usage"]
    assert events[-1]["data"]["output"] == MATH_ANSWER


async def test_the_scripted_run_calls_its_tool_then_answers_with_the_echo_and_the_result(
    api: Api,
) -> None:
    key = await api.key()
    _, events = await finished_run(api, key)
    types = [e["type"] for e in events]
    assert types[:5] == [
        "run.created",
        "run.started",
        "tool.called",
        "tool.started",
        "tool.completed",
    ]
    assert types[-2:] == ["message.completed", "run.completed"]
    assert set(types[5:-2]) == {"message.delta"}
    called, started, completed = events[2], events[3], events[4]
    # The call's start is recorded before it runs, with the key its tool is sent.
    assert started["data"]["call_id"] == called["data"]["call_id"]
    assert started["data"]["idempotency_key"] == called["data"]["call_id"]
    assert called["data"]["tool"] == "math.evaluate"
    assert called["data"]["arguments"] == {"expression": "6*7"}
    assert called["data"]["policy"]["decision"] == "allow"
    receipt = completed["data"]["receipt"]
    assert completed["data"]["call_id"] == called["data"]["call_id"] == receipt["call_id"]
    assert receipt["status"] == "ok" and receipt["result"] == {"value": 42}
    assert called["work_item_id"] and completed["work_item_id"] == called["work_item_id"]
    deltas = "".join(e["data"]["text"] for e in events if e["type"] == "message.delta")
    assert deltas == events[-2]["data"]["content"] == MATH_ANSWER
    assert events[-2]["data"]["role"] == "assistant"


async def test_a_run_on_an_unknown_thread_or_agent_is_404_and_appends_nothing(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    head = api.runtime.store.head()
    for response in [
        await post_run(api, key, ZERO, "hi"),
        await post_run(api, key, "not-a-thread", "hi"),
        await post_run(api, key, thread_id, "hi", agent_id=ZERO),
        await post_run(api, key, thread_id, "hi", agent_id="not-an-agent"),
    ]:
        assert_error(response, 404, "not_found")
    # Checking the agent may create the tenant's default agent, but never a run.
    await api.settle()
    listed = await api.client.get("/v1/runs", headers=auth(key))
    assert listed.json()["total_count"] == 0
    assert api.runtime.store.head() <= head + 1


async def test_an_empty_or_missing_input_is_422_with_the_path_of_the_field(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    empty = await post_run(api, key, thread_id, "")
    assert assert_error(empty, 422, "validation_failed", issues=True)["issues"][0]["path"] == [
        "input"
    ]
    missing = await api.client.post("/v1/runs", json={"thread_id": thread_id}, headers=auth(key))
    assert_error(missing, 422, "validation_failed", issues=True)
    bad_tier = await post_run(api, key, thread_id, "hi", tier="ludicrous")
    assert_error(bad_tier, 422, "validation_failed", issues=True)
    bad_busy = await post_run(api, key, thread_id, "hi", if_busy="sometimes")
    assert_error(bad_busy, 422, "validation_failed", issues=True)


async def test_a_run_on_a_deleted_thread_is_404(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    deleted = await api.client.delete(f"/v1/threads/{thread_id}", headers=auth(key))
    assert deleted.status_code == 204
    assert_error(await post_run(api, key, thread_id, "hi"), 404, "not_found")
    chat = await api.client.post(
        "/v1/chat", json={"thread_id": thread_id, "input": "hi"}, headers=auth(key)
    )
    assert_error(chat, 404, "not_found")


async def test_a_run_on_another_tenants_thread_is_404(api: Api) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    thread_id = await new_thread(api, globex)
    assert_error(await post_run(api, acme, thread_id, "hi"), 404, "not_found")


async def test_a_viewer_cannot_start_runs_or_chat_but_can_read_them(api: Api) -> None:
    admin = await api.key()
    viewer = await api.key(roles=("viewer",))
    thread_id = await new_thread(api, admin)
    assert_error(await post_run(api, viewer, thread_id, "hi"), 403, "forbidden")
    chat = await api.client.post("/v1/chat", json={"input": "hi"}, headers=auth(viewer))
    assert_error(chat, 403, "forbidden")
    stream = await api.client.post("/v1/chat/stream", json={"input": "hi"}, headers=auth(viewer))
    assert_error(stream, 403, "forbidden")
    run, _ = await finished_run(api, admin, "hi", thread_id=thread_id)
    seen = await read_run(api, viewer, run["id"], 0)
    assert seen == run


async def test_another_tenants_run_is_404_on_every_run_route(api: Api) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    run, events = await finished_run(api, globex)
    at = {"X-Nome-Min-Position": str(events[-1]["position"])}
    base = f"/v1/runs/{run['id']}"
    for path in ["", "/stream", "/events", "/replay", "/state", "/state?at=1"]:
        response = await api.client.get(base + path, headers=auth(acme, **at))
        assert_error(response, 404, "not_found")
    for path in ["/verify", "/cancel"]:
        assert_error(await api.client.post(base + path, headers=auth(acme)), 404, "not_found")
    listed = await api.client.get("/v1/runs", headers=auth(acme, **at))
    assert listed.json() == {"data": [], "next_cursor": None, "total_count": 0}
    by_thread = await api.client.get(
        "/v1/runs", params={"thread_id": run["thread_id"]}, headers=auth(acme)
    )
    assert by_thread.json()["data"] == []


async def test_a_run_id_that_is_no_uuid_or_no_run_is_404(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    for run_id in ["nope", "1", ZERO, thread_id]:
        base = f"/v1/runs/{run_id}"
        for path in ["", "/stream", "/events", "/replay", "/state"]:
            assert_error(await api.client.get(base + path, headers=auth(key)), 404, "not_found")
        for path in ["/verify", "/cancel"]:
            assert_error(await api.client.post(base + path, headers=auth(key)), 404, "not_found")


# -- one active run per thread ------------------------------------------------------------


async def test_a_second_run_on_a_busy_thread_is_409_run_in_progress_naming_the_active_run(
    api: Api,
) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    created: list[str] = []
    conflict: dict[str, Any] | None = None
    for _ in range(20):
        responses = await asyncio.gather(
            post_run(api, key, thread_id, SLOW_INPUT), post_run(api, key, thread_id, "second")
        )
        created += [r.json()["id"] for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code == 409]
        assert all(r.status_code in (201, 409) for r in responses)
        if refused:
            conflict = refused[0].json()
            assert refused[0].headers["content-type"].split(";")[0] == "application/json"
            break
        for run_id in created:
            await finish(api, key, run_id)
    assert conflict is not None, "no second run ever found the thread busy"
    assert set(conflict) == {"error", "code", "request_id", "active_run_id"}
    assert conflict["code"] == "run_in_progress"
    assert conflict["active_run_id"] in created
    for run_id in created:
        await finish(api, key, run_id)
    # The refused run left no trace: only the admitted runs exist.
    await api.settle()
    listed = await api.client.get("/v1/runs", params={"thread_id": thread_id}, headers=auth(key))
    assert sorted(r["id"] for r in listed.json()["data"]) == sorted(created)


async def test_an_enqueued_run_starts_only_after_the_active_run_has_ended(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    first = await start_run(api, key, thread_id, SLOW_INPUT)
    second = await start_run(api, key, thread_id, "queued behind", if_busy="enqueue")
    assert second["status"] == "pending"
    first_events = await finish(api, key, first["id"])
    second_events = await finish(api, key, second["id"])
    assert first_events[-1]["type"] == second_events[-1]["type"] == "run.completed"
    started = next(e for e in second_events if e["type"] == "run.started")
    assert started["position"] > first_events[-1]["position"]
    at = max(first_events[-1]["position"], second_events[-1]["position"])
    one, two = await read_run(api, key, first["id"], at), await read_run(api, key, second["id"], at)
    assert two["started_at"] >= one["ended_at"]
    assert one["status"] == two["status"] == "completed"
    await api.settle()
    thread = (await api.client.get(f"/v1/threads/{thread_id}", headers=auth(key))).json()
    assert thread["active_run_id"] is None and thread["last_run_id"] == second["id"]


async def test_a_thread_is_free_again_once_its_run_has_ended(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    await finished_run(api, key, "first", thread_id=thread_id)
    second, _ = await finished_run(api, key, "second", thread_id=thread_id)
    assert second["status"] == "completed"


# -- chat ---------------------------------------------------------------------------------


async def test_chat_answers_with_the_ended_run_and_the_assistant_message(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    response = await api.client.post(
        "/v1/chat",
        json={"thread_id": thread_id, "input": MATH_INPUT, "tier": "deep", "domain_hints": ["x"]},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"run", "message"}
    run, message = body["run"], body["message"]
    assert set(run) == RUN_KEYS and run["status"] == "completed" and run["thread_id"] == thread_id
    assert run["usage"]["credits"] > 0
    assert message["role"] == "assistant" and message["thread_id"] == thread_id
    assert message["content"] == MATH_ANSWER
    assert message["metadata"]["tier"] == "deep"
    assert message["metadata"]["tools_invoked"] == ["math.evaluate"]
    assert message["metadata"]["episode_id"] == run["id"]
    assert message["metadata"]["domain_hints"] == ["x"]
    stored = await messages_of(api, key, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == MATH_INPUT and stored[0]["metadata"]["episode_id"] == run["id"]
    assert stored[1]["id"] == message["id"]
    assert stored[1]["content"] == MATH_ANSWER
    assert stored[1]["metadata"]["episode_id"] == run["id"]


async def test_chat_reports_a_position_that_covers_the_answer(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    response = await api.client.post(
        "/v1/chat", json={"thread_id": thread_id, "input": "read your writes"}, headers=auth(key)
    )
    assert response.status_code == 200
    listed = await api.client.get(
        f"/v1/threads/{thread_id}/messages",
        headers=auth(key, **{"X-Nome-Min-Position": str(position(response))}),
    )
    assert [m["role"] for m in listed.json()["data"]] == ["user", "assistant"]
    thread = await api.client.get(
        f"/v1/threads/{thread_id}",
        headers=auth(key, **{"X-Nome-Min-Position": str(position(response))}),
    )
    assert thread.json()["active_run_id"] is None


async def test_a_thread_note_lands_in_the_thread_as_a_system_message_before_the_answer(
    api: Api,
) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    text = '/tool thread.note {"text": "remember the milk"}\nnoted'
    response = await api.client.post(
        "/v1/chat", json={"thread_id": thread_id, "input": text}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    message = response.json()["message"]
    assert message["metadata"]["tools_invoked"] == ["thread.note"]
    assert message["content"].startswith('noted\nthread.note: {"note_id":')
    stored = await messages_of(api, key, thread_id)
    assert [m["role"] for m in stored] == ["user", "system", "assistant"]
    assert stored[1]["content"] == "remember the milk"
    assert stored[1]["metadata"]["episode_id"] == response.json()["run"]["id"]
    assert stored[2]["content"] == message["content"]


async def test_chat_without_a_thread_creates_one_that_holds_the_conversation(api: Api) -> None:
    key = await api.key()
    response = await api.client.post("/v1/chat", json={"input": "hi there"}, headers=auth(key))
    assert response.status_code == 200, response.text
    run, message = response.json()["run"], response.json()["message"]
    assert message["content"] == "hi there" and message["thread_id"] == run["thread_id"]
    await api.settle()
    threads = (await api.client.get("/v1/threads", headers=auth(key))).json()["data"]
    assert [t["id"] for t in threads] == [run["thread_id"]]
    assert threads[0]["message_count"] == 2 and threads[0]["last_run_id"] == run["id"]
    stored = await messages_of(api, key, run["thread_id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "hi there"),
        ("assistant", "hi there"),
    ]


# -- listing runs -------------------------------------------------------------------------


async def test_runs_are_listed_newest_first_and_filtered_by_thread_and_status(api: Api) -> None:
    key = await api.key()
    one, two = await new_thread(api, key), await new_thread(api, key)
    a, _ = await finished_run(api, key, "a", thread_id=one)
    b, _ = await finished_run(api, key, "b", thread_id=two)
    c, _ = await finished_run(api, key, "c", thread_id=one)
    pending = await start_run(api, key, two, SLOW_INPUT)
    queued = await start_run(api, key, two, "queued", if_busy="enqueue")
    cancelled = await api.client.post(f"/v1/runs/{queued['id']}/cancel", headers=auth(key))
    assert cancelled.status_code == 200, cancelled.text
    at = {"X-Nome-Min-Position": str(position(cancelled))}

    async def ids(**params: Any) -> tuple[list[str], int]:
        response = await api.client.get("/v1/runs", params=params, headers=auth(key, **at))
        assert response.status_code == 200, response.text
        page = response.json()
        return [r["id"] for r in page["data"]], page["total_count"]

    everything, total = await ids()
    assert everything == [queued["id"], pending["id"], c["id"], b["id"], a["id"]]
    assert total == 5
    assert await ids(thread_id=one) == ([c["id"], a["id"]], 2)
    assert await ids(status="cancelled") == ([queued["id"]], 1)
    assert await ids(status="completed") == ([c["id"], b["id"], a["id"]], 3)
    assert await ids(thread_id=two, status="completed") == ([b["id"]], 1)
    assert await ids(thread_id=one, status="cancelled") == ([], 0)
    await finish(api, key, pending["id"])
    bad = await api.client.get("/v1/runs", params={"status": "sleeping"}, headers=auth(key))
    assert_error(bad, 400, "bad_request")


async def test_paging_through_runs_with_a_cursor_gives_every_run_once(api: Api) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    made = []
    for word in ["one", "two", "three", "four", "five"]:
        run, events = await finished_run(api, key, word, thread_id=thread_id)
        made.append(run["id"])
    at = {"X-Nome-Min-Position": str(events[-1]["position"])}
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/runs", params=params, headers=auth(key, **at))).json()
        pages += 1
        assert page["total_count"] == 5 and len(page["data"]) <= 2
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(made))
    by_thread = await api.client.get(
        "/v1/runs", params={"thread_id": thread_id, "limit": 5}, headers=auth(key, **at)
    )
    assert by_thread.json()["next_cursor"] is None
    both: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"thread_id": thread_id, "status": "completed", "limit": 2}
        page = (
            await api.client.get(
                "/v1/runs",
                params={**params, **({"cursor": cursor} if cursor else {})},
                headers=auth(key, **at),
            )
        ).json()
        assert page["total_count"] == 5 and len(page["data"]) == min(2, 5 - len(both))
        both += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert both == seen


# -- the log: events, state ---------------------------------------------------------------


async def test_a_runs_events_page_by_seq_with_a_gapless_hash_chain(api: Api) -> None:
    key = await api.key()
    run, streamed = await finished_run(api, key)
    count = len(streamed)
    collected: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(count):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(
            f"/v1/runs/{run['id']}/events", params=params, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total_count"] == count and len(page["data"]) <= 3
        collected += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert collected == streamed
    assert [e["seq"] for e in collected] == list(range(1, count + 1))
    assert collected[0]["receipt"]["prev_hash"] is None
    for before, after in itertools.pairwise(collected):
        assert after["receipt"]["prev_hash"] == before["receipt"]["hash"]
        assert after["position"] > before["position"]
    for envelope in collected:
        assert set(envelope) == ENVELOPE_KEYS
        assert envelope["stream_id"] == envelope["run_id"] == run["id"]
        assert envelope["thread_id"] == run["thread_id"]
        assert envelope["receipt"]["hash"] == chain_hash(envelope)


async def test_events_after_a_seq_start_right_after_it(api: Api) -> None:
    key = await api.key()
    run, streamed = await finished_run(api, key)
    count = len(streamed)
    for after in [0, 1, count - 1, count]:
        response = await api.client.get(
            f"/v1/runs/{run['id']}/events", params={"after": after}, headers=auth(key)
        )
        assert response.status_code == 200
        assert response.json()["data"] == streamed[after:]
        assert response.json()["next_cursor"] is None
    limited = await api.client.get(
        f"/v1/runs/{run['id']}/events", params={"after": 2, "limit": 2}, headers=auth(key)
    )
    assert [e["seq"] for e in limited.json()["data"]] == [3, 4]
    rest = await api.client.get(
        f"/v1/runs/{run['id']}/events",
        params={"cursor": limited.json()["next_cursor"], "limit": 200},
        headers=auth(key),
    )
    assert rest.json()["data"] == streamed[4:]
    for params in [{"after": -1}, {"limit": 0}, {"limit": 201}, {"cursor": "%%%"}]:
        response = await api.client.get(
            f"/v1/runs/{run['id']}/events", params=params, headers=auth(key)
        )
        assert_error(response, 400, "bad_request")


async def test_the_state_at_a_seq_is_the_run_folded_up_to_that_event(api: Api) -> None:
    key = await api.key()
    run, events = await finished_run(api, key)
    base = f"/v1/runs/{run['id']}/state"

    async def at(seq: int | None) -> dict[str, Any]:
        params = {"at": seq} if seq is not None else {}
        response = await api.client.get(base, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = await at(1)
    assert first["seq"] == 1 and first["run"]["status"] == "pending"
    assert first["run"]["started_at"] is None and first["run"]["event_count"] == 1
    assert first["input"] == MATH_INPUT and first["output"] is None
    assert first["calls"] == [] and first["messages"] == []
    second = await at(2)
    assert second["run"]["status"] == "active" and second["run"]["started_at"] == events[1]["at"]
    after_tool = await at(5)
    assert [c["tool"] for c in after_tool["calls"]] == ["math.evaluate"]
    assert after_tool["calls"][0]["receipt"]["result"] == {"value": 42}
    last = await at(len(events))
    assert last["run"]["status"] == "completed" and last["output"] == MATH_ANSWER
    assert last["run"]["ended_at"] == events[-1]["at"]
    assert last["run"]["usage"] == run["usage"]
    assert {k: v for k, v in last["run"].items()} == run
    assert await at(None) == last
    too_far = await api.client.get(base, params={"at": len(events) + 1}, headers=auth(key))
    assert_error(too_far, 404, "not_found")
    zero = await api.client.get(base, params={"at": 0}, headers=auth(key))
    assert_error(zero, 400, "bad_request")


# -- verify -------------------------------------------------------------------------------


async def test_verify_re_executes_a_recorded_run_and_finds_it_deterministic(api: Api) -> None:
    key = await api.key()
    run, events = await finished_run(api, key)
    head = api.runtime.store.head()
    response = await api.client.post(f"/v1/runs/{run['id']}/verify", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "deterministic": True,
        "events_compared": len(events),
        "divergence": None,
    }
    assert api.runtime.store.head() == head  # verifying appends nothing


async def test_verify_finds_a_tampered_answer_at_the_seq_of_the_changed_event(api: Api) -> None:
    key = await api.key()
    run, events = await finished_run(api, key)
    answer = next(e for e in events if e["type"] == "message.completed")
    schema = api.runtime.settings.database_schema
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        changed = conn.execute(
            f'UPDATE "{schema}"."nome_events" '
            "SET state = convert_to(replace(convert_from(state, 'UTF8'), 'seven', 'eight'), "
            "'UTF8') WHERE originator_id = %s AND originator_version = %s",
            (run["id"], answer["seq"]),
        ).rowcount
    assert changed == 1
    response = await api.client.post(f"/v1/runs/{run['id']}/verify", headers=auth(key))
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["deterministic"] is False
    assert verdict["divergence"]["seq"] == answer["seq"]
    assert "seven" in json.dumps(verdict["divergence"]["expected"])
    assert "eight" in json.dumps(verdict["divergence"]["actual"])


async def test_verify_needs_the_operator_role(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    operator = await api.key(roles=("operator",))
    run, _ = await finished_run(api, admin, "check me")
    refused = await api.client.post(f"/v1/runs/{run['id']}/verify", headers=auth(member))
    assert_error(refused, 403, "forbidden")
    allowed = await api.client.post(f"/v1/runs/{run['id']}/verify", headers=auth(operator))
    assert allowed.status_code == 200 and allowed.json()["deterministic"] is True


# -- cancel -------------------------------------------------------------------------------


async def test_cancelling_a_finished_run_is_409_and_changes_nothing(api: Api) -> None:
    key = await api.key()
    run, events = await finished_run(api, key, "done")
    response = await api.client.post(f"/v1/runs/{run['id']}/cancel", headers=auth(key))
    assert_error(response, 409, "conflict")
    assert (await finish(api, key, run["id"])) == events


async def test_cancelling_a_queued_run_ends_it_before_it_ever_starts(api: Api) -> None:
    key = await api.key()
    operator = await api.key(roles=("operator",))
    thread_id = await new_thread(api, key)
    first = await start_run(api, key, thread_id, SLOW_INPUT)
    queued = await start_run(api, key, thread_id, "never runs", if_busy="enqueue")
    response = await api.client.post(
        f"/v1/runs/{queued['id']}/cancel",
        json={"reason": "changed my mind"},
        headers=auth(operator),
    )
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert set(cancelled) == RUN_KEYS
    assert cancelled["id"] == queued["id"] and cancelled["status"] == "cancelled"
    assert TIME.match(cancelled["ended_at"]) and cancelled["started_at"] is None
    events = await finish(api, key, queued["id"])
    assert [e["type"] for e in events] == ["run.created", "run.cancelled"]
    assert events[-1]["data"]["reason"] == "changed my mind"
    assert events[-1]["data"]["by"]
    # The active run is not disturbed, and the thread is free once it ends.
    assert (await finish(api, key, first["id"]))[-1]["type"] == "run.completed"
    assert await read_run(api, key, queued["id"], position(response)) == cancelled
    again = await api.client.post(f"/v1/runs/{queued['id']}/cancel", headers=auth(operator))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    await finished_run(api, key, "next", thread_id=thread_id)


async def test_cancelling_needs_the_operator_role(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    thread_id = await new_thread(api, admin)
    run = await start_run(api, member, thread_id, "mine")
    refused = await api.client.post(f"/v1/runs/{run['id']}/cancel", headers=auth(member))
    assert_error(refused, 403, "forbidden")
    assert (await finish(api, admin, run["id"]))[-1]["type"] == "run.completed"
