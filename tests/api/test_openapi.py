"""The OpenAPI document says what the server does (issue 10, items 6 and 12), and input the
server cannot read is a 400 or 422, never a 500. tests/api/test_openapi_fuzz.py holds the
document to every answer; these name what it must say."""

from __future__ import annotations

from typing import Any

from nome_api.errors import speaks_openai
from tests.support.api import Api, auth
from tests.support.errors import assert_error

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
# API.md §10's routes answer errors in OpenAI's shape (tests/api/test_completions.py).
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {("get", "/v1/health")}


async def document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in doc["paths"].items()
        for method in METHODS
        if method in item
    ]


async def test_every_error_an_operation_can_answer_is_documented_with_the_contracts_body(
    api: Api,
) -> None:
    doc = await document(api)
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "code"}
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        expected = {"400"}
        if (method, path) not in PUBLIC:
            expected |= {"401", "403", "429", "503"}
        if "{" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"413", "422"}
        assert expected <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")) and (method, path) not in PUBLIC:
                content = response["content"]
                body = OPENAI_ERROR if speaks_openai(path) else ERROR_BODY
                assert content == {"application/json": {"schema": body}}, (method, path)
                assert "detail" not in str(response), (method, path, status)


async def test_the_errors_a_command_adds_are_documented_where_it_can_answer_them(
    api: Api,
) -> None:
    paths = (await document(api))["paths"]
    assert {"402", "404", "409"} <= set(paths["/v1/runs"]["post"]["responses"])
    assert {"402", "404", "409"} <= set(paths["/v1/chat"]["post"]["responses"])
    assert "409" in paths["/v1/approvals/{approval_id}/approve"]["post"]["responses"]
    assert "409" in paths["/v1/threads"]["post"]["responses"]
    retry_after = paths["/v1/threads"]["get"]["responses"]["429"]["headers"]
    assert "Retry-After" in retry_after
    challenge = paths["/v1/threads"]["get"]["responses"]["401"]["headers"]
    assert "WWW-Authenticate" in challenge


async def test_the_bearer_scheme_is_declared_and_required_by_every_route_but_health(
    api: Api,
) -> None:
    doc = await document(api)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    for method, path, operation in operations(doc):
        if (method, path) in PUBLIC:
            assert "security" not in operation, path
        else:
            assert {"bearer": []} in operation["security"], (method, path)
    events = doc["paths"]["/v1/events"]["get"]["security"]
    assert {"streamToken": []} in events


async def test_request_bodies_and_parameters_carry_the_bounds_the_server_enforces(
    api: Api,
) -> None:
    doc = await document(api)
    schemas = doc["components"]["schemas"]
    strict = [name for name, s in schemas.items() if name.endswith("Body") and name != "ErrorBody"]
    assert strict
    for name in strict:
        assert schemas[name]["additionalProperties"] is False, name
    metadata = schemas["CreateThreadBody"]["properties"]["metadata"]
    assert metadata["maxProperties"] == 64
    assert metadata["propertyNames"] == {"minLength": 1, "maxLength": 128}
    assert metadata["additionalProperties"]["maxLength"] == 2048
    assert schemas["PostMessageBody"]["properties"]["content"]["minLength"] == 1
    hints = schemas["CreateRunBody"]["properties"]["domain_hints"]
    assert hints["maxItems"] == 32 and hints["items"]["minLength"] == 1
    tier = schemas["CreateRunBody"]["properties"]["tier"]["anyOf"][0]
    assert tier == {"enum": ["deep", "fast", "standard"]}

    def parameter(path: str, name: str) -> dict[str, Any]:
        found = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
        return found[0]["schema"]  # type: ignore[no-any-return]

    for path in ("/v1/threads", "/v1/runs", "/v1/approvals", "/v1/admin/keys"):
        limit = parameter(path, "limit")
        assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 200, 50), path
    assert set(parameter("/v1/runs", "status")["enum"]) >= {"pending", "active", "cancelled"}
    assert parameter("/v1/audit/export", "after")["minimum"] == 0


async def test_streams_empty_answers_and_accepted_ones_have_their_real_status_and_media_type(
    api: Api,
) -> None:
    paths = (await document(api))["paths"]

    def answer(path: str, method: str, status: str) -> dict[str, Any]:
        return paths[path][method]["responses"][status]  # type: ignore[no-any-return]

    for path, method in [
        ("/v1/events", "get"),
        ("/v1/runs/{run_id}/stream", "get"),
        ("/v1/chat/stream", "post"),
    ]:
        assert set(answer(path, method, "200")["content"]) == {"text/event-stream"}, path
    replay = answer("/v1/runs/{run_id}/replay", "get", "200")["content"]
    assert set(replay) == {"text/event-stream", "application/x-ndjson"}
    export = answer("/v1/audit/export", "get", "200")["content"]
    assert set(export) == {"application/x-ndjson"}
    for path in ("/v1/threads/{thread_id}", "/v1/agents/{agent_id}", "/v1/admin/keys/{key_id}"):
        assert "content" not in answer(path, "delete", "204"), path
    assert "200" in paths["/v1/chat"]["post"]["responses"]
    assert "202" in paths["/v1/chat"]["post"]["responses"]
    assert "202" in paths["/v1/tools/call"]["post"]["responses"]
    assert "201" in paths["/v1/threads"]["post"]["responses"]
    rebuild = paths["/v1/admin/projections/{name}/rebuild"]["post"]["responses"]
    assert "202" in rebuild and "200" not in rebuild


async def test_the_ids_an_answer_carries_link_to_the_routes_that_take_them(api: Api) -> None:
    paths = (await document(api))["paths"]
    thread = paths["/v1/threads"]["post"]["responses"]["201"]["links"]["POST_v1_runs.thread_id"]
    assert thread == {
        "operationRef": "#/paths/~1v1~1runs/post",
        "requestBody": {"thread_id": "$response.body#/id"},
    }
    approval = paths["/v1/tools/call"]["post"]["responses"]["202"]["links"]
    assert approval["POST_v1_approvals_approval_id_approve.approval_id"]["parameters"] == {
        "path.approval_id": "$response.body#/approval_id"
    }


async def test_options_names_every_method_of_the_path(api: Api) -> None:
    key = await api.key()
    for path, allow in [
        ("/v1/threads", "GET, OPTIONS, POST"),
        ("/v1/threads/x", "DELETE, GET, OPTIONS, PATCH"),
        ("/v1/runs", "GET, OPTIONS, POST"),
        ("/v1/agents/x", "DELETE, GET, OPTIONS, PATCH"),
        ("/v1/admin/keys", "GET, OPTIONS, POST"),
    ]:
        response = await api.client.options(path, headers=auth(key))
        assert response.status_code == 204, path
        assert response.headers["allow"] == allow, path


async def test_the_schema_pages_answer_the_contracts_json_404_and_never_html(api: Api) -> None:
    for page in ("swagger", "redoc", "elements", "rapidoc", "openapi.yaml", "nope"):
        response = await api.client.get(f"/schema/{page}")
        assert_error(response, 404, "not_found")
    assert (await api.client.get("/schema")).json()["openapi"].startswith("3.1")


async def test_a_body_nested_deeper_than_128_levels_is_400_however_deep(api: Api) -> None:
    key = await api.key()

    def call(depth: int) -> str:
        # The body itself is one level: the arguments nest `depth - 1` more.
        arguments = '{"a":' * (depth - 1) + "1" + "}" * (depth - 1)
        return '{"tool":"clock.now","arguments":' + arguments + "}"

    headers = auth(key, **{"Content-Type": "application/json"})
    for body in [call(129), call(5_000), "[" * 100_000, '{"metadata":' + "[" * 2_000]:
        response = await api.client.post("/v1/tools/call", content=body, headers=headers)
        assert_error(response, 400, "bad_request")
    # At the limit the body is read, and its arguments judged by the tool.
    response = await api.client.post("/v1/tools/call", content=call(128), headers=headers)
    assert_error(response, 422, "validation_failed", issues=True)


async def test_invalid_utf8_in_a_json_body_is_400(api: Api) -> None:
    key = await api.key()
    headers = auth(key, **{"Content-Type": "application/json"})
    for body in [b'{"title": "\xff\xfe"}', b'{"title": "a\xc3"}', b"\xff\xfe", b'{"\xff": 1}']:
        response = await api.client.post("/v1/threads", content=body, headers=headers)
        assert_error(response, 400, "bad_request")


async def test_numbers_out_of_their_fields_range_are_refused_not_stored(api: Api) -> None:
    key = await api.key()
    huge = b'{"max_calls_per_run": 99999999999999999999999999}'
    response = await api.client.put("/v1/tools/policies/clock.now", content=huge, headers=auth(key))
    assert_error(response, 422, "validation_failed", issues=True)
    beyond = 2**63
    for path in [
        f"/v1/audit/export?after={beyond}",
        f"/v1/audit/export?until={beyond}",
        f"/v1/runs/00000000-0000-4000-8000-000000000000/events?after={beyond}",
        f"/v1/runs/00000000-0000-4000-8000-000000000000/state?at={beyond}",
    ]:
        assert_error(await api.client.get(path, headers=auth(key)), 400, "bad_request")
    infinite = b'{"tool": "clock.now", "arguments": {"n": 1e999}}'
    response = await api.client.post("/v1/tools/call", content=infinite, headers=auth(key))
    assert_error(response, 400, "bad_request")


async def test_a_resume_point_int_cannot_read_or_past_any_position_is_400(api: Api) -> None:
    key = await api.key()
    run = "/v1/runs/00000000-0000-4000-8000-000000000000/stream"
    for path in ("/v1/events", run):
        for after in ("²", "9" * 5_000, str(2**63)):
            response = await api.client.get(path, params={"after": after}, headers=auth(key))
            assert_error(response, 400, "bad_request")
        headers = auth(key, **{"Last-Event-ID": "9" * 5_000})
        assert_error(await api.client.get(path, headers=headers), 400, "bad_request")
