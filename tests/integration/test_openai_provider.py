"""The `openai` provider against a fake Chat Completions server speaking the real streaming
wire format: tool calls whose arguments arrive in pieces, the tool result sent back on the
next turn, text streamed as deltas, and a failing model server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from nome_api.settings import Settings
from tests.conftest import Api, auth
from tests.integration.support.fake_openai import (
    FakeOpenAI,
    Reply,
    broken_reply,
    chunk,
    error_reply,
    text_reply,
    tool_call_reply,
)
from tests.integration.support.runs import assert_log_invariants, messages_text, wait_for_end

pytestmark = pytest.mark.slow

API_KEY = "sk-fake-" + "x" * 20
ANSWER = ["6 times 7", " plus 1", " is ", "43", ", as the", " tool said", ". Grüße 👋"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.replying(error_reply(503)) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, fake_openai: FakeOpenAI) -> Settings:
    """The conftest settings, with the model server at the fake."""
    return msgspec.structs.replace(
        settings, openai_base_url=fake_openai.base_url, openai_api_key=API_KEY
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


async def test_a_model_server_error_fails_the_run_with_model_error(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(error_reply(500))
    key = await api.key()
    agent_id = await openai_agent(api, key, ["math.evaluate"])
    run_id = await start_run(api, key, agent_id, "anything")

    events = await wait_for_end(api, key, run_id)

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.failed", events[-1]
    assert events[-1]["data"]["error"]["code"] == "model_error"
    assert "500" in events[-1]["data"]["error"]["message"]
    assert len(fake_openai.requests) == 1

    position = str(events[-1]["position"])
    run = await api.client.get(
        f"/v1/runs/{run_id}", headers=auth(key, **{"X-Nome-Min-Position": position})
    )
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "failed"
    assert run.json()["error"]["code"] == "model_error"
    assert run.json()["ended_at"] is not None

    verdict = await api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key))
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["deterministic"] is True


async def test_a_model_server_that_breaks_off_mid_answer_fails_the_run_without_asking_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with(broken_reply(["Half ", "an ", "answer"]), text_reply(["again"]))
    key = await api.key()
    agent_id = await openai_agent(api, key, [])
    run_id = await start_run(api, key, agent_id, "anything")

    events = await wait_for_end(api, key, run_id)

    assert_log_invariants(events, run_id)
    assert events[-1]["type"] == "run.failed", [e["type"] for e in events]
    assert events[-1]["data"]["error"]["code"] == "model_error"
    assert len(fake_openai.requests) == 1


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
