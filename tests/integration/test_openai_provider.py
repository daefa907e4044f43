"""The `openai` provider against a fake Chat Completions server speaking the real streaming
wire format: tool calls whose arguments arrive in pieces, the tool result sent back on the
next turn, text streamed as deltas, the thread's conversation sent to the model, and a
model server that fails in every way one does (500s, 429 with Retry-After, a connection
dropped mid-answer, a malformed stream line, an HTML page)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.fake_openai import (
    FakeOpenAI,
    Reply,
    broken_reply,
    chunk,
    error_reply,
    html_reply,
    malformed_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.runs import (
    assert_log_invariants,
    events_of,
    messages_text,
    wait_for_end,
    wait_for_events,
)

pytestmark = pytest.mark.slow

API_KEY = "sk-fake-" + "x" * 20
MODEL_ATTEMPTS = 4
ANSWER = ["6 times 7", " plus 1", " is ", "43", ", as the", " tool said", ". Grüße 👋"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.replying(error_reply(503)) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, fake_openai: FakeOpenAI) -> Settings:
    """The conftest settings, with the model server at the fake and a short back-off."""
    return msgspec.structs.replace(
        settings,
        openai_base_url=fake_openai.base_url,
        openai_api_key=API_KEY,
        model_attempts=MODEL_ATTEMPTS,
        model_backoff_s=0.02,
    )


async def openai_agent(api: Api, key: str, tools: list[str]) -> str:
    response = await api.client.post(
        "/v1/agents",
        json={
            "name": "calculator",
            "instructions": "Use the tools you have.",
            "provider": "openai",
            "model": "gpt-fake",
            "tools": tools,
        },
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    assert response.json()["provider"] == "openai"
    return str(response.json()["id"])


async def start_run(api: Api, key: str, agent_id: str, text: str) -> str:
    thread = await api.client.post("/v1/threads", json={"title": "maths"}, headers=auth(key))
    assert thread.status_code == 201, thread.text
    response = await api.client.post(
        "/v1/runs",
        json={"thread_id": thread.json()["id"], "input": text, "agent_id": agent_id},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"
    return str(response.json()["id"])


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_a_split_tool_call_runs_the_tool_and_the_next_turn_sees_its_result(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(
        tool_call_reply("call_fake_1", "math__evaluate", ['{"expr', 'ession": "6', '*7+1"}']),
        text_reply(ANSWER),
    )
    key = await api.key()
    agent_id = await openai_agent(api, key, ["math.evaluate", "clock.now"])
    run_id = await start_run(api, key, agent_id, "What is 6*7+1?")

    events = await wait_for_end(api, key, run_id)

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.completed", events[-1]
    (called,) = of_type(events, "tool.called")
    assert called["data"]["tool"] == "math.evaluate"
    assert called["data"]["arguments"] == {"expression": "6*7+1"}
    assert called["data"]["policy"]["decision"] == "allow"
    (completed,) = of_type(events, "tool.completed")
    receipt = completed["data"]["receipt"]
    assert receipt["call_id"] == called["data"]["call_id"]
    assert receipt["tool"] == "math.evaluate"
    assert receipt["status"] == "ok"
    assert receipt["result"] == {"value": 43}
    assert receipt["run_id"] == run_id

    # The answer streamed as deltas that add up to the one completed message and the output.
    assert of_type(events, "message.delta")
    assert messages_text(events) == ["".join(ANSWER)]
    assert events[-1]["data"]["output"] == "".join(ANSWER)

    # What went over the wire: the model, the tools under wire names, then the tool result.
    assert len(fake_openai.requests) == 2
    first, second = fake_openai.requests
    assert first.authorization == f"Bearer {API_KEY}"
    assert first.body["model"] == "gpt-fake"
    assert first.body["stream"] is True
    names = {t["function"]["name"] for t in first.body["tools"]}
    assert names == {"math__evaluate", "clock__now"}
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert first.messages[1]["content"] == "What is 6*7+1?"

    assistant = next(m for m in second.messages if m["role"] == "assistant")
    (wire_call,) = assistant["tool_calls"]
    assert wire_call["function"]["name"] == "math__evaluate"
    assert json.loads(wire_call["function"]["arguments"]) == {"expression": "6*7+1"}
    (tool_message,) = [m for m in second.messages if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == wire_call["id"]
    assert "43" in tool_message["content"]
    assert second.messages.index(assistant) < second.messages.index(tool_message)

    run = await api.client.get(f"/v1/runs/{run_id}/state", headers=auth(key))
    assert run.status_code == 200, run.text
    assert run.json()["run"]["status"] == "completed"
    assert run.json()["output"] == "".join(ANSWER)

    verdict = await api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key))
    assert verdict.status_code == 200, verdict.text
    assert verdict.json() == {
        "deterministic": True,
        "events_compared": len(events),
        "divergence": None,
    }


async def test_two_tool_calls_streamed_interleaved_are_each_run_once_in_index_order(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Real servers interleave the pieces of parallel calls; each piece names its call's index.
    steps: list[Any] = [
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "math__evaluate", "arguments": ""},
                    }
                ],
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"expression": '}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "math__evaluate", "arguments": '{"expre'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"2**10"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'ssion": "7 // 2"}'}}]}),
        chunk({}, finish_reason="tool_calls"),
    ]
    fake_openai.answer_with(Reply(steps), text_reply(["done"]))
    key = await api.key()
    agent_id = await openai_agent(api, key, ["math.evaluate"])
    run_id = await start_run(api, key, agent_id, "two sums")

    events = await wait_for_end(api, key, run_id)

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.completed", events[-1]
    calls = of_type(events, "tool.called")
    assert [c["data"]["arguments"] for c in calls] == [
        {"expression": "2**10"},
        {"expression": "7 // 2"},
    ]
    receipts = {
        e["data"]["call_id"]: e["data"]["receipt"] for e in of_type(events, "tool.completed")
    }
    assert [receipts[c["data"]["call_id"]]["result"] for c in calls] == [
        {"value": 1024},
        {"value": 3},
    ]
    tool_messages = [m for m in fake_openai.requests[1].messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c["data"]["call_id"] for c in calls]


# -- a model that misbehaves cannot flood a run -----------------------------------------
# Every failure mode below ends the run (or lets it go on) within a bounded number of events
# and requests; the module's settings allow MODEL_ATTEMPTS attempts per turn.


async def failed_turn_run(api: Api, fake: FakeOpenAI, *replies: Reply) -> tuple[str, str, Any]:
    fake.answer_with(*replies)
    key = await api.key()
    agent_id = await openai_agent(api, key, [])
    run_id = await start_run(api, key, agent_id, "anything")
    return key, run_id, await wait_for_end(api, key, run_id)


async def assert_verifies(api: Api, key: str, run_id: str, events: list[dict[str, Any]]) -> None:
    verdict = await api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key))
    assert verdict.status_code == 200, verdict.text
    assert verdict.json() == {
        "deterministic": True,
        "events_compared": len(events),
        "divergence": None,
    }, verdict.json()


async def assert_quiet(api: Api, key: str, run_id: str, fake: FakeOpenAI, events: Any) -> None:
    """Nothing more happens to an ended run: no request, no event (no retry loop)."""
    asked = len(fake.requests)
    await asyncio.sleep(0.3)
    assert len(fake.requests) == asked
    assert await events_of(api, key, run_id) == events


async def test_a_model_server_failing_with_500s_is_retried_then_the_run_fails_clearly(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    key, run_id, events = await failed_turn_run(api, fake_openai, error_reply(500))

    assert_log_invariants(events, run_id)
    assert [e["type"] for e in events] == [
        "run.created",
        "run.started",
        *["model.retry_scheduled"] * (MODEL_ATTEMPTS - 1),
        "run.failed",
    ]
    retries = of_type(events, "model.retry_scheduled")
    assert [r["data"]["attempt"] for r in retries] == list(range(1, MODEL_ATTEMPTS))
    assert all("500" in r["data"]["error"]["message"] for r in retries)
    error = events[-1]["data"]["error"]
    assert error["code"] == "model_error"
    assert "500" in error["message"] and f"after {MODEL_ATTEMPTS} attempts" in error["message"]
    assert len(fake_openai.requests) == MODEL_ATTEMPTS

    position = str(events[-1]["position"])
    run = await api.client.get(
        f"/v1/runs/{run_id}", headers=auth(key, **{"X-Nome-Min-Position": position})
    )
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "failed"
    assert run.json()["error"] == error
    await assert_verifies(api, key, run_id, events)
    await assert_quiet(api, key, run_id, fake_openai, events)


async def test_a_429_is_asked_again_after_its_retry_after_and_the_run_completes(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    key, run_id, events = await failed_turn_run(
        api, fake_openai, error_reply(429, retry_after="1"), text_reply(["Fine", " now."])
    )

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.completed", events[-1]
    (retry,) = of_type(events, "model.retry_scheduled")
    assert retry["data"]["retry_after_s"] == 1.0 and "429" in retry["data"]["error"]["message"]
    first, second = fake_openai.requests
    assert second.at - first.at >= 0.9  # Retry-After honoured (less a clock's rounding)
    assert messages_text(events) == ["Fine now."]
    await assert_verifies(api, key, run_id, events)


async def test_a_connection_dropped_mid_answer_discards_the_half_message_and_asks_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    key, run_id, events = await failed_turn_run(
        api, fake_openai, broken_reply(["Half ", "an ", "answer"]), text_reply(ANSWER)
    )

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.completed", [e["type"] for e in events]
    (discarded,) = of_type(events, "message.discarded")
    half = {e["data"]["message_id"] for e in events if e["type"] == "message.delta"}
    assert discarded["data"]["message_id"] in half
    assert "unreachable" in discarded["data"]["reason"]
    (retry,) = of_type(events, "model.retry_scheduled")
    assert events.index(discarded) < events.index(retry)
    # The half message is never completed: the answer is said once, in full.
    assert messages_text(events) == ["".join(ANSWER)]
    assert events[-1]["data"]["output"] == "".join(ANSWER)
    assert len(fake_openai.requests) == 2
    await assert_verifies(api, key, run_id, events)


async def test_a_malformed_stream_line_fails_the_run_once_without_asking_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    key, run_id, events = await failed_turn_run(
        api, fake_openai, malformed_reply(["Half ", "an ", "answer"]), text_reply(["never"])
    )

    assert_log_invariants(events, run_id)
    types = [e["type"] for e in events]
    assert types[:2] == ["run.created", "run.started"]
    assert types[-2:] == ["message.discarded", "run.failed"]
    assert set(types[2:-2]) <= {"message.delta"} and len(events) <= 2 + 3 + 2
    assert "message.completed" not in types
    assert "malformed" in events[-1]["data"]["error"]["message"]
    assert len(fake_openai.requests) == 1
    await assert_verifies(api, key, run_id, events)
    await assert_quiet(api, key, run_id, fake_openai, events)


async def test_a_200_answered_with_an_html_page_fails_the_run_instead_of_completing_it(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    key, run_id, events = await failed_turn_run(api, fake_openai, html_reply())

    assert [e["type"] for e in events] == ["run.created", "run.started", "run.failed"]
    error = events[-1]["data"]["error"]
    assert error["code"] == "model_error" and "text/html" in error["message"]
    assert len(fake_openai.requests) == 1
    await assert_quiet(api, key, run_id, fake_openai, events)


async def test_a_cancel_wins_against_a_run_waiting_to_ask_its_model_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(error_reply(503, retry_after="30"))
    key = await api.key()
    agent_id = await openai_agent(api, key, [])
    run_id = await start_run(api, key, agent_id, "anything")
    await wait_for_events(api, key, run_id, 3)

    cancelled = await api.client.post(f"/v1/runs/{run_id}/cancel", headers=auth(key))

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    events = await events_of(api, key, run_id)
    assert [e["type"] for e in events] == [
        "run.created",
        "run.started",
        "model.retry_scheduled",
        "run.cancelled",
    ]
    assert len(fake_openai.requests) == 1
    await assert_quiet(api, key, run_id, fake_openai, events)


async def test_tools_are_offered_to_the_model_as_object_schemas_the_openai_api_accepts(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # OpenAI rejects a function whose `parameters` is not a JSON Schema with a top-level
    # `"type": "object"` (a bare `$ref` root is refused with `invalid_function_parameters`).
    fake_openai.answer_with(text_reply(["ok"]))
    key = await api.key()
    agent_id = await openai_agent(api, key, ["math.evaluate", "clock.now", "thread.note"])
    run_id = await start_run(api, key, agent_id, "anything")
    await wait_for_end(api, key, run_id)

    (request,) = fake_openai.requests
    for tool in request.body["tools"]:
        assert tool["type"] == "function"
        parameters = tool["function"]["parameters"]
        assert parameters.get("type") == "object", (tool["function"]["name"], parameters)
        assert isinstance(parameters.get("properties"), dict), parameters
        assert "$ref" not in parameters, parameters


# -- the model sees the conversation ------------------------------------------------------


def text_and_call_reply(text: str, call_id: str, wire_name: str, arguments: str) -> Reply:
    """A turn that says something and then calls a tool."""
    call = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": wire_name, "arguments": arguments},
    }
    return Reply(
        [
            chunk({"role": "assistant", "content": text}),
            chunk({"tool_calls": [call]}),
            chunk({}, finish_reason="tool_calls"),
        ]
    )


async def run_on(api: Api, key: str, agent_id: str, thread_id: str, text: str) -> list[Any]:
    """A run on the thread, to its end."""
    response = await api.client.post(
        "/v1/runs",
        json={"thread_id": thread_id, "input": text, "agent_id": agent_id},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    run_id = str(response.json()["id"])
    events = await wait_for_end(api, key, run_id)
    assert events[-1]["type"] == "run.completed", events[-1]
    await assert_verifies(api, key, run_id, events)
    return events


async def new_thread(api: Api, key: str) -> str:
    thread = await api.client.post("/v1/threads", json={"title": "chat"}, headers=auth(key))
    assert thread.status_code == 201, thread.text
    return str(thread.json()["id"])


def said(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each message's role and content, a call's tool and arguments, a result's call."""
    out: list[tuple[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in m["tool_calls"]
            ]
            out.append((m["role"], (m["content"], calls)))
        elif m["role"] == "tool":
            out.append(("tool", (m["tool_call_id"], m["content"])))
        else:
            out.append((m["role"], m["content"]))
    return out


async def test_a_second_run_on_a_thread_is_sent_what_was_said_before_it(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(text_reply(["Nice to meet ", "you, Ada."]), text_reply(["Ada."]))
    key = await api.key()
    agent_id = await openai_agent(api, key, [])
    thread_id = await new_thread(api, key)
    await run_on(api, key, agent_id, thread_id, "My name is Ada")
    note = await api.client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"role": "system", "content": "Answer in one word."},
        headers=auth(key),
    )
    assert note.status_code == 201, note.text

    await run_on(api, key, agent_id, thread_id, "What is my name?")

    assert said(fake_openai.requests[1].messages) == [
        ("system", "Use the tools you have."),
        ("user", "My name is Ada"),
        ("assistant", "Nice to meet you, Ada."),
        ("system", "Answer in one word."),
        ("user", "What is my name?"),
    ]


async def test_rounds_of_tool_calls_are_separate_turns_with_their_text_and_paired_results(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(
        text_and_call_reply("Let me add.", "call_a", "math__evaluate", '{"expression": "2+2"}'),
        tool_call_reply("call_b", "math__evaluate", ['{"expression": "3*3"}']),
        text_reply(["4 and 9."]),
        text_reply(["Still 4 and 9."]),
    )
    key = await api.key()
    agent_id = await openai_agent(api, key, ["math.evaluate"])
    thread_id = await new_thread(api, key)
    events = await run_on(api, key, agent_id, thread_id, "Add, then multiply")
    first, second = [c["data"]["call_id"] for c in of_type(events, "tool.called")]

    turns = [
        ("user", "Add, then multiply"),
        ("assistant", ("Let me add.", [(first, "math__evaluate", {"expression": "2+2"})])),
        ("tool", (first, 'math.evaluate: {"value":4}')),
        ("assistant", (None, [(second, "math__evaluate", {"expression": "3*3"})])),
        ("tool", (second, 'math.evaluate: {"value":9}')),
    ]
    system = ("system", "Use the tools you have.")
    assert said(fake_openai.requests[2].messages) == [system, *turns]
    assert messages_text(events) == ["Let me add.", "4 and 9."]

    # A later run of the thread is sent the earlier run's turns the same way.
    await run_on(api, key, agent_id, thread_id, "Again?")
    assert said(fake_openai.requests[3].messages) == [
        system,
        *turns,
        ("assistant", "4 and 9."),
        ("user", "Again?"),
    ]


async def test_the_history_keeps_to_the_agents_context_tokens_dropping_the_oldest_first(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(text_reply(["First answer."]), text_reply(["Second answer."]))
    key = await api.key()
    agent_id = await openai_agent(api, key, [])
    patched = await api.client.patch(
        f"/v1/agents/{agent_id}", json={"context_tokens": 100}, headers=auth(key)
    )
    assert patched.status_code == 200 and patched.json()["context_tokens"] == 100
    thread_id = await new_thread(api, key)
    long_question = " ".join(["word"] * 90)
    await run_on(api, key, agent_id, thread_id, long_question)
    await run_on(api, key, agent_id, thread_id, "A short second question")

    await run_on(api, key, agent_id, thread_id, "And now?")

    # 100 words: the instructions and the input (7) always; then the newest turns that fit.
    assert said(fake_openai.requests[2].messages) == [
        ("system", "Use the tools you have."),
        ("assistant", "First answer."),
        ("user", "A short second question"),
        ("assistant", "Second answer."),
        ("user", "And now?"),
    ]
