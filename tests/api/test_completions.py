"""OpenAI-compatible chat (API.md §10), driven by OpenAI's own clients: the official `openai`
SDK and LangChain's `ChatOpenAI` against a real NOME HTTP server (the scripted model), and
NOME's own `openai` provider against another NOME. The error shapes the gateway and the
commands answer are checked in process as well."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from nome_core.tenants.state import tenant_id_for
from tests.support.api import Api, auth
from tests.support.openai_compat import Served, nome_serving

pytestmark = pytest.mark.slow

# http.fetch waits for an approval by default; approved, it is refused (a loopback address)
# and the run completes with an error receipt, without any network.
FETCH = '/tool http.fetch {"url": "http://127.0.0.1:9/"}\nfetch it please'
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def nome() -> Iterator[Served]:
    """One server for the module (each test makes its own threads); keepalives every 0.2 s
    so a stream waiting on an approval shows them soon."""
    with nome_serving(sse_heartbeat_s=0.2) as served:
        yield served


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def sse_data(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, in order ([DONE] as the string)."""
    payloads: list[Any] = []
    for frame in body.decode().split("\n\n"):
        for line in frame.split("\n"):
            if line.startswith("data: "):
                raw = line[len("data: ") :]
                payloads.append(raw if raw == "[DONE]" else json.loads(raw))
    return payloads


def messages_of(nome: Served, thread_id: str, position: str) -> list[tuple[str, str]]:
    page = nome.call(
        "GET",
        f"/v1/threads/{thread_id}/messages",
        headers={"X-Nome-Min-Position": position},
    )
    return [(m["role"], m["content"]) for m in page["data"]]


# -- models -------------------------------------------------------------------------------


def test_models_are_the_default_agent_as_nome_and_each_agent_by_its_name(nome: Served) -> None:
    first, _ = nome.agent(name="librarian", instructions="Find books.")
    second, _ = nome.agent(name="librarian", instructions="Find more books.")
    nome.agent(name="team/librarian", instructions="A name with a slash.")
    named_nome, position = nome.agent(name="nome", instructions="Not the default.")
    client = nome.client(default_headers={"X-Nome-Min-Position": position})

    listed = {m.id: m for m in client.models.list().data}

    assert "nome" in listed and listed["nome"].owned_by == "default"
    # The oldest agent of a name holds it; a later one (and one named `nome`) is a model by
    # its agent id.
    assert {"librarian", second, named_nome} <= set(listed)
    assert first not in listed
    assert all(m.object == "model" and m.created > 0 for m in listed.values())
    assert client.models.retrieve("librarian").id == "librarian"
    assert client.models.retrieve("team/librarian").id == "team/librarian"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-agent")
    assert missing.value.code == "model_not_found"

    answered = client.chat.completions.with_raw_response.create(
        model=second, messages=[user("which agent")]
    )
    run = nome.run(answered.headers["x-nome-run-id"])
    assert run["agent_id"] == second
    assert answered.parse().model == second


# -- completions --------------------------------------------------------------------------


def test_a_completion_is_one_run_answered_whole_with_its_usage_and_ids(nome: Served) -> None:
    client = nome.client()

    raw = client.chat.completions.with_raw_response.create(
        model="nome", messages=[user("the quick brown fox")]
    )

    completion = raw.parse()
    run_id, thread_id = raw.headers["x-nome-run-id"], raw.headers["x-nome-thread-id"]
    assert completion.id == f"chatcmpl-{run_id}"
    assert completion.object == "chat.completion" and completion.model == "nome"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "the quick brown fox"  # the scripted model echoes
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 4)
    assert completion.usage.total_tokens == 8
    run = nome.run(run_id, raw.headers["x-nome-position"])
    assert (run["thread_id"], run["status"]) == (thread_id, "completed")
    assert (run["usage"]["input_tokens"], run["usage"]["output_tokens"]) == (4, 4)


def test_a_retry_with_the_same_idempotency_key_answers_the_same_completion(nome: Served) -> None:
    client = nome.client()
    ask = {"model": "nome", "messages": [user("only once")]}
    key = {"Idempotency-Key": "completion-once"}

    first = client.chat.completions.with_raw_response.create(**ask, extra_headers=key)
    again = client.chat.completions.with_raw_response.create(**ask, extra_headers=key)

    assert again.parse() == first.parse()
    assert again.headers["idempotent-replayed"] == "true"
    runs = nome.call(
        "GET",
        "/v1/runs",
        params={"thread_id": first.headers["x-nome-thread-id"]},
        headers={"X-Nome-Min-Position": again.headers["x-nome-position"]},
    )
    assert runs["total_count"] == 1
    with pytest.raises(openai.ConflictError) as reused:
        client.chat.completions.create(
            model="nome", messages=[user("something else")], extra_headers=key
        )
    assert reused.value.code == "idempotency_mismatch"
    assert reused.value.response.headers["x-should-retry"] == "false"


def test_parameters_nome_does_not_use_are_accepted_and_ignored(nome: Served) -> None:
    completion = nome.client().chat.completions.create(
        model="nome",
        messages=[user("ignore the knobs")],
        temperature=0.2,
        top_p=0.9,
        stop=["\n"],
        presence_penalty=0.5,
        frequency_penalty=0.5,
        n=1,
        parallel_tool_calls=False,
        max_tokens=5,
        max_completion_tokens=5,
        response_format={"type": "text"},
        seed=7,
        logit_bias={"50256": -100},
        user="someone",
        metadata={"purpose": "test"},
        extra_body={"a_parameter_from_the_future": {"x": 1}},
    )
    assert completion.choices[0].message.content == "ignore the knobs"


def test_a_stream_has_one_id_the_role_first_the_deltas_the_finish_usage_and_done(
    nome: Served,
) -> None:
    body = {
        "model": "nome",
        "messages": [user("streamed word by word")],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = nome.http.post("/v1/chat/completions", json=body, headers=nome.headers())

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    run_id = response.headers["x-nome-run-id"]
    assert response.headers["x-nome-thread-id"]
    *chunks, done = sse_data(response.content)
    assert done == "[DONE]"
    assert {c["id"] for c in chunks} == {f"chatcmpl-{run_id}"}
    assert len({c["created"] for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    *answer, usage = chunks
    deltas = [c["choices"][0]["delta"] for c in answer]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("content", "") for d in deltas) == "streamed word by word"
    assert [c["choices"][0]["finish_reason"] for c in answer] == [None] * (len(answer) - 1) + [
        "stop"
    ]
    assert deltas[-1] == {}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}


def test_the_sdk_streams_a_completion_with_its_usage(nome: Served) -> None:
    stream = nome.client().chat.completions.create(
        model="nome",
        messages=[user("one two three")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 6
    assert len({c.id for c in chunks}) == 1


def test_the_sdks_stream_helper_assembles_the_final_completion(nome: Served) -> None:
    helper = nome.client().chat.completions.stream
    with helper(model="nome", messages=[user("helped along")]) as stream:
        pieces = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(pieces) == "helped along"
    assert final.choices[0].message.content == "helped along"
    assert final.choices[0].finish_reason == "stop"


def test_langchain_chat_openai_streams_and_invokes(nome: Served) -> None:
    chat = ChatOpenAI(model="nome", base_url=nome.base_url, api_key=nome.key, max_retries=0)

    chunks = list(chat.stream("hello from langchain"))
    answered = chat.invoke([SystemMessage("Be brief."), HumanMessage("and once more")])

    assert "".join(str(c.content) for c in chunks) == "hello from langchain"
    assert answered.content == "and once more"


def test_a_completions_run_replays_byte_for_byte_as_it_streamed_and_verifies(
    nome: Served,
) -> None:
    stream = nome.client().chat.completions.with_raw_response.create(
        model="nome", messages=[user("replay me exactly")], stream=True
    )
    run_id = stream.headers["x-nome-run-id"]
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == "replay me exactly"

    first = nome.http.get(f"/v1/runs/{run_id}/replay", headers=nome.headers())
    second = nome.http.get(f"/v1/runs/{run_id}/replay", headers=nome.headers())
    live = nome.http.get(f"/v1/runs/{run_id}/stream", headers=nome.headers())

    assert first.status_code == 200 and first.content == second.content
    assert live.content.replace(b": keepalive\n\n", b"") == first.content
    envelopes = [e for e in sse_data(first.content)]
    said = "".join(e["data"]["text"] for e in envelopes if e["type"] == "message.delta")
    assert said == text
    assert envelopes[-1]["type"] == "run.completed"
    verdict = nome.call("POST", f"/v1/runs/{run_id}/verify")
    assert verdict["deterministic"] is True and verdict["divergence"] is None
    assert verdict["events_compared"] == len(envelopes)


# -- history and threads ------------------------------------------------------------------


def test_earlier_messages_become_the_new_threads_history(nome: Served) -> None:
    conversation = [
        {"role": "system", "content": "Answer in French."},
        user("hello"),
        {"role": "assistant", "content": "bonjour"},
        {"role": "developer", "content": [{"type": "text", "text": "Stay polite."}]},
        user("and goodbye"),
    ]

    raw = nome.client().chat.completions.with_raw_response.create(
        model="nome", messages=conversation
    )

    thread_id = raw.headers["x-nome-thread-id"]
    stored = messages_of(nome, thread_id, raw.headers["x-nome-position"])
    assert stored == [
        ("system", "Answer in French."),
        ("user", "hello"),
        ("assistant", "bonjour"),
        ("system", "Stay polite."),
        ("user", "and goodbye"),
        ("assistant", "and goodbye"),
    ]
    thread = nome.call("GET", f"/v1/threads/{thread_id}")
    assert thread["title"] == "hello"


def test_a_thread_named_in_metadata_or_the_header_is_continued(nome: Served) -> None:
    client = nome.client()
    first = client.chat.completions.with_raw_response.create(
        model="nome", messages=[user("first question")]
    )
    thread_id = first.headers["x-nome-thread-id"]
    # A client resends the whole conversation; the thread already holds it.
    resent = [user("first question"), {"role": "assistant", "content": "first question"}]

    second = client.chat.completions.with_raw_response.create(
        model="nome",
        messages=[*resent, user("second question")],
        metadata={"nome_thread_id": thread_id},
    )
    third = client.chat.completions.with_raw_response.create(
        model="nome",
        messages=[user("third question")],
        extra_headers={"X-Nome-Thread-Id": thread_id},
    )

    assert second.headers["x-nome-thread-id"] == third.headers["x-nome-thread-id"] == thread_id
    assert len({r.headers["x-nome-run-id"] for r in (first, second, third)}) == 3
    assert messages_of(nome, thread_id, third.headers["x-nome-position"]) == [
        ("user", "first question"),
        ("assistant", "first question"),
        ("user", "second question"),
        ("assistant", "second question"),
        ("user", "third question"),
        ("assistant", "third question"),
    ]
    with pytest.raises(openai.BadRequestError) as conflicting:
        client.chat.completions.create(
            model="nome",
            messages=[user("which one")],
            metadata={"nome_thread_id": thread_id},
            extra_headers={"X-Nome-Thread-Id": "00000000-0000-4000-8000-000000000000"},
        )
    assert conflicting.value.param == "metadata.nome_thread_id"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="nome",
            messages=[user("nowhere")],
            metadata={"nome_thread_id": "00000000-0000-4000-8000-000000000000"},
        )


# -- approvals ----------------------------------------------------------------------------


def pending_approval_of(nome: Served, run_id: str) -> str:
    def probe() -> Any:
        queue = nome.call("GET", "/v1/approvals", params={"status": "pending", "limit": 200})
        return next((a["id"] for a in queue["data"] if a["run_id"] == run_id), None)

    return str(nome.eventually(probe, f"an approval of run {run_id}"))


def test_a_stream_waiting_on_an_approval_sends_keepalives_until_it_is_resolved(
    nome: Served,
) -> None:
    body = {"model": "nome", "messages": [user(FETCH)], "stream": True}
    seen: list[bytes] = []
    approved = False
    with nome.http.stream(
        "POST", "/v1/chat/completions", json=body, headers=nome.headers()
    ) as response:
        run_id = response.headers["x-nome-run-id"]
        for line in response.iter_lines():
            seen.append(line.encode())
            if line == ": keepalive" and not approved:
                nome.call("POST", f"/v1/approvals/{pending_approval_of(nome, run_id)}/approve")
                approved = True

    assert approved
    payloads = sse_data(b"\n\n".join(seen))
    assert payloads[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in payloads[:-1])
    assert text.startswith("fetch it please\nhttp.fetch: error")
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


def test_a_whole_answer_waits_for_the_approval_and_the_runs_end(nome: Served) -> None:
    thread = nome.call("POST", "/v1/threads", json={"title": "approve me"})["id"]
    client = nome.client()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            client.chat.completions.create,
            model="nome",
            messages=[user(FETCH)],
            metadata={"nome_thread_id": thread},
        )

        def run_of_thread() -> Any:
            runs = nome.call("GET", "/v1/runs", params={"thread_id": thread})
            return runs["data"][0]["id"] if runs["data"] else None

        run_id = nome.eventually(run_of_thread, "the completion's run")
        nome.call("POST", f"/v1/approvals/{pending_approval_of(nome, run_id)}/approve")
        completion = answer.result(timeout=30)
    assert completion.id == f"chatcmpl-{run_id}"
    assert completion.choices[0].message.content.startswith("fetch it please\nhttp.fetch: ")


# -- refusals and errors ------------------------------------------------------------------


def test_what_nome_cannot_do_is_refused_as_openais_bad_request(nome: Served) -> None:
    client = nome.client(max_retries=0)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"tools": [tool]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"extra_body": {"functions": [tool["function"]]}}, "functions"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ]
    for extra, param in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="nome", messages=[user("hi")], **extra)
        assert (refused.value.code, refused.value.param) == ("unsupported_parameter", param)
        assert refused.value.type == "invalid_request_error"
    for messages, param in [
        ([user("hi"), {"role": "tool", "content": "42", "tool_call_id": "c1"}], "messages[1]"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content",
        ),
        ([user("hi"), {"role": "assistant", "content": "hello"}], "messages[1].role"),
        ([user("   ")], "messages[0].content"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="nome", messages=messages)  # type: ignore[arg-type]
        assert refused.value.param == param


def test_a_bad_key_and_an_unknown_model_surface_as_the_sdks_errors(nome: Served) -> None:
    stranger = openai.OpenAI(base_url=nome.base_url, api_key="nome_sk_" + "x" * 43)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.chat.completions.create(model="nome", messages=[user("hi")])
    assert refused.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        nome.client().chat.completions.create(model="gpt-4o", messages=[user("hi")])
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")

    # The gateway's own 401, before any route: OpenAI's shape, exactly.
    bare = nome.http.post("/v1/chat/completions", json={})
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert set(bare.json()) == {"error"} and set(bare.json()["error"]) == ERROR_KEYS


async def test_errors_on_these_routes_take_openais_shape_with_the_usual_statuses(
    api: Api,
) -> None:
    admin, viewer = await api.key(), await api.key(roles=("viewer",))
    body = {"model": "nome", "messages": [user("hi")]}

    def error_of(response: httpx.Response, status: int, kind: str, code: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert set(response.json()) == {"error"}
        error: dict[str, Any] = response.json()["error"]
        assert set(error) == ERROR_KEYS
        assert (error["type"], error["code"]) == (kind, code)
        assert error["message"] and "Traceback" not in error["message"]
        return error

    post = api.client.post
    error_of(
        await post("/v1/chat/completions", json=body), 401, "authentication_error", "unauthorized"
    )
    error_of(
        await post("/v1/chat/completions", json=body, headers=auth(viewer)),
        403,
        "permission_error",
        "forbidden",
    )
    invalid = error_of(
        await post(
            "/v1/chat/completions",
            json={"model": "nome", "messages": [{"role": "robot", "content": "hi"}]},
            headers=auth(admin),
        ),
        422,
        "invalid_request_error",
        "validation_failed",
    )
    assert invalid["param"] == "messages[0].role"
    error_of(
        await api.client.get("/v1/models/nope", headers=auth(admin)),
        404,
        "not_found_error",
        "model_not_found",
    )
    error_of(
        await api.client.put("/v1/models", headers=auth(admin)),
        405,
        "invalid_request_error",
        "method_not_allowed",
    )
    # The rest of the API keeps the contract's own body.
    assert set((await api.client.get("/v1/threads")).json()) == {"error", "code", "request_id"}

    # A thread with a run waiting on an approval: a completion continuing it is a 409 that
    # the SDKs must not retry.
    thread = (await post("/v1/threads", json={}, headers=auth(admin))).json()["id"]
    busy = await post("/v1/runs", json={"thread_id": thread, "input": FETCH}, headers=auth(admin))
    assert busy.status_code == 201, busy.text
    conflict = await post(
        "/v1/chat/completions",
        json={**body, "metadata": {"nome_thread_id": thread}},
        headers=auth(admin),
    )
    error = error_of(conflict, 409, "invalid_request_error", "run_in_progress")
    assert conflict.headers["x-should-retry"] == "false"
    assert busy.json()["id"] in error["message"]

    # A tenant whose billing was cancelled: 402 is OpenAI's insufficient_quota.
    operator = await api.platform_key()
    cancelled = await api.client.put(
        f"/v1/platform/tenants/{tenant_id_for('acme')}/billing",
        json={"status": "canceled"},
        headers=auth(operator),
    )
    assert cancelled.status_code == 200, cancelled.text
    error_of(
        await post("/v1/chat/completions", json=body, headers=auth(admin)),
        402,
        "insufficient_quota",
        "billing_inactive",
    )


async def test_the_openapi_document_gives_these_routes_openais_error_body(api: Api) -> None:
    doc = (await api.client.get("/schema/openapi.json")).json()
    completions = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(completions["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "401", "402", "403", "404", "409", "413", "422", "429", "500", "503"} <= set(
        completions
    )
    for path, method in [
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model_id}", "get"),
    ]:
        for status, answer in doc["paths"][path][method]["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/OpenAIError"}, (path, status)


# -- NOME's openai provider against another NOME ------------------------------------------


@pytest.fixture(scope="module")
def two_nomes() -> Iterator[tuple[Served, Served]]:
    """`front`, whose `openai` agents use `back`'s /v1 as their model server."""
    with nome_serving() as back:
        changes = {"openai_base_url": back.base_url, "openai_api_key": back.key}
        with nome_serving(**changes) as front:
            yield front, back


def test_a_nome_whose_model_server_is_another_nome_sends_it_the_conversation(
    two_nomes: tuple[Served, Served],
) -> None:
    front, back = two_nomes
    _, position = front.agent(
        name="relay", instructions="Ask the other NOME.", provider="openai", model="nome", tools=[]
    )
    client = front.client(default_headers={"X-Nome-Min-Position": position})

    raw = client.chat.completions.with_raw_response.create(
        model="relay",
        messages=[
            user("what was it"),
            {"role": "assistant", "content": "a fox"},
            user("say again"),
        ],
    )

    # The back NOME's scripted agent echoed the input; the front's run said it on.
    assert raw.parse().choices[0].message.content == "say again"

    def backs_thread() -> Any:
        threads = back.call("GET", "/v1/threads")["data"]
        return threads[0]["id"] if threads else None

    thread_id = back.eventually(backs_thread, "the back NOME's thread")
    stored = back.eventually(
        lambda: (m := messages_of(back, thread_id, "0")) and len(m) == 5 and m,
        "the back NOME's thread to hold the conversation",
    )
    assert stored == [
        ("system", "Ask the other NOME."),
        ("user", "what was it"),
        ("assistant", "a fox"),
        ("user", "say again"),
        ("assistant", "say again"),
    ]

    # LangChain through both.
    chat = ChatOpenAI(
        model="relay",
        base_url=front.base_url,
        api_key=front.key,
        max_retries=0,
        default_headers={"X-Nome-Min-Position": position},
    )
    relayed = chat.invoke([HumanMessage("hi"), AIMessage("hello"), HumanMessage("relay this")])
    assert relayed.content == "relay this"


def test_a_run_that_fails_mid_stream_ends_with_an_error_before_done(
    two_nomes: tuple[Served, Served],
) -> None:
    front, _ = two_nomes
    # The back NOME refuses client-side tools, so a front agent with tools cannot use it.
    _, position = front.agent(
        name="toolful",
        instructions="Use tools.",
        provider="openai",
        model="nome",
        tools=["clock.now"],
    )
    headers = front.headers(**{"X-Nome-Min-Position": position})
    body = {"model": "toolful", "messages": [user("what time is it")], "stream": True}

    streamed = front.http.post("/v1/chat/completions", json=body, headers=headers)

    assert streamed.status_code == 200
    *chunks, error, done = sse_data(streamed.content)
    assert done == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert set(error) == {"error"} and set(error["error"]) == ERROR_KEYS
    assert (error["error"]["type"], error["error"]["code"]) == ("server_error", "model_error")
    assert "client-side tools are not supported" in error["error"]["message"]

    client = front.client(default_headers={"X-Nome-Min-Position": position})
    with pytest.raises(openai.APIError) as failed:
        list(client.chat.completions.create(**body))
    assert "client-side tools are not supported" in failed.value.message

    # Whole: a 500 the SDK does not retry (the run is in the log; another would cost again).
    thread = front.call("POST", "/v1/threads", json={"title": "fails once"})["id"]
    with pytest.raises(openai.InternalServerError) as whole:
        client.chat.completions.create(
            model="toolful", messages=[user("and now")], metadata={"nome_thread_id": thread}
        )
    assert whole.value.code == "model_error"
    assert whole.value.response.headers["x-should-retry"] == "false"
    runs = front.call(
        "GET",
        "/v1/runs",
        params={"thread_id": thread},
        headers={"X-Nome-Min-Position": whole.value.response.headers["x-nome-position"]},
    )
    assert [r["status"] for r in runs["data"]] == ["failed"]
