"""The one error body of API.md §0 on every kind of failure, and never anything else."""

from __future__ import annotations

from typing import Any

from tests.support.api import Api, auth
from tests.support.errors import assert_error

BEARER_GARBAGE = "Bearer nome_sk_" + "A" * 43  # well formed, but no such key


async def test_an_unknown_route_is_a_json_404_even_without_a_key(api: Api) -> None:
    key = await api.key()
    for path, headers in [("/nope", {}), ("/v1/nope", auth(key)), ("/v1/threads/a/b/c", {})]:
        response = await api.client.get(path, headers=headers)
        assert_error(response, 404, "not_found")


async def test_a_wrong_method_is_a_json_405(api: Api) -> None:
    key = await api.key()
    for method, path in [("PUT", "/v1/threads"), ("DELETE", "/v1/bootstrap")]:
        response = await api.client.request(method, path, headers=auth(key))
        assert response.status_code == 405, (method, path)
        assert_error(response, 405, "method_not_allowed")


async def test_a_body_over_the_default_one_mebibyte_is_413(api: Api) -> None:
    key = await api.key()
    assert api.runtime.settings.max_body_bytes == 1024 * 1024
    big = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    response = await api.client.post(
        "/v1/threads", content=big, headers=auth(key, **{"Content-Type": "application/json"})
    )
    assert_error(response, 413, "payload_too_large")
    await api.settle()
    listed = await api.client.get("/v1/threads", headers=auth(key))
    assert listed.json()["total_count"] == 0


async def test_malformed_json_is_400_and_a_missing_body_is_400(api: Api) -> None:
    key = await api.key()
    json_headers = auth(key, **{"Content-Type": "application/json"})
    for content in [b"{bad", b'{"title": "x"', b"[1, 2", b"\xff\xfe"]:
        response = await api.client.post("/v1/threads", content=content, headers=json_headers)
        assert_error(response, 400, "bad_request")
    response = await api.client.post("/v1/threads", headers=auth(key))
    assert_error(response, 400, "bad_request")


async def test_a_title_of_the_wrong_type_is_422_with_the_path_of_the_title(api: Api) -> None:
    key = await api.key()
    response = await api.client.post("/v1/threads", json={"title": 5}, headers=auth(key))
    body = assert_error(response, 422, "validation_failed", issues=True)
    assert [issue["path"] for issue in body["issues"]] == [["title"]]
    assert all(issue["message"] for issue in body["issues"])


async def test_an_unknown_field_is_422_and_names_the_field(api: Api) -> None:
    key = await api.key()
    response = await api.client.post("/v1/threads", json={"titel": "typo"}, headers=auth(key))
    body = assert_error(response, 422, "validation_failed", issues=True)
    assert body["issues"][0]["path"] == ["titel"]


async def test_a_metadata_value_too_long_is_422_with_a_path_into_metadata(api: Api) -> None:
    key = await api.key()
    response = await api.client.post(
        "/v1/threads", json={"metadata": {"note": "x" * 2049}}, headers=auth(key)
    )
    body = assert_error(response, 422, "validation_failed", issues=True)
    assert body["issues"][0]["path"][0] == "metadata"


async def test_invalid_message_bodies_are_422_with_paths(api: Api) -> None:
    key = await api.key()
    created = await api.client.post("/v1/threads", json={}, headers=auth(key))
    thread_id = created.json()["id"]
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"content": ""}, ["content"]),
        ({"content": "hi", "role": "assistant"}, ["role"]),
        ({"content": "hi", "metadata": {"k": 7}}, ["metadata"]),
        ({"role": "user"}, []),
    ]
    for payload, path in cases:
        response = await api.client.post(
            f"/v1/threads/{thread_id}/messages", json=payload, headers=auth(key)
        )
        body = assert_error(response, 422, "validation_failed", issues=True)
        assert body["issues"][0]["path"][: len(path)] == path, (payload, body)


async def test_a_missing_or_garbage_bearer_is_401_with_www_authenticate(api: Api) -> None:
    await api.key()
    cases = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": BEARER_GARBAGE},
    ]
    for headers in cases:
        for method, path in [("GET", "/v1/threads"), ("POST", "/v1/threads")]:
            response = await api.client.request(method, path, headers=headers, json={})
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", headers


async def test_a_bad_limit_is_400(api: Api) -> None:
    key = await api.key()
    created = await api.client.post("/v1/threads", json={}, headers=auth(key))
    await api.settle()
    thread_id = created.json()["id"]
    for path in ["/v1/threads", f"/v1/threads/{thread_id}/messages", "/v1/admin/keys"]:
        for limit in ["0", "201", "-1", "abc", "1.5"]:
            response = await api.client.get(path, params={"limit": limit}, headers=auth(key))
            assert_error(response, 400, "bad_request")
        for limit in ["1", "200"]:
            response = await api.client.get(path, params={"limit": limit}, headers=auth(key))
            assert response.status_code == 200, (path, limit, response.text)


async def test_a_cursor_this_service_never_issued_is_400(api: Api) -> None:
    key = await api.key()
    created = await api.client.post("/v1/threads", json={}, headers=auth(key))
    await api.settle()
    thread_id = created.json()["id"]
    # Not base64 at all; base64 of nonsense; a message cursor on the thread list and back.
    garbage = ["%%%", "!!!", "a", "eHl6", "MTIz", "MDAwMDAwMDAwMDAwMDAwMDAwfHg"]
    paths = ["/v1/threads", f"/v1/threads/{thread_id}/messages", "/v1/admin/keys"]
    for path in paths:
        for cursor in garbage:
            if cursor == "MTIz" and path.endswith("/messages"):
                continue  # "123" is a well-formed message cursor
            response = await api.client.get(path, params={"cursor": cursor}, headers=auth(key))
            assert_error(response, 400, "bad_request")
    response = await api.client.get(
        "/v1/threads", params={"cursor": "eHl6", "q": "x"}, headers=auth(key)
    )
    assert_error(response, 400, "bad_request")


async def test_client_build_headers_must_be_printable_and_at_most_64_chars(api: Api) -> None:
    key = await api.key()
    headers_tried = [
        "X-Nome-Client-Surface",
        "X-Nome-Client-Version",
        "X-Nome-Client-Revision",
    ]
    for header in headers_tried:
        for value in [b"x" * 65, b"a\tb", b"caf\xe9", b"\x7f"]:
            headers: dict[str, str | bytes] = {**auth(key), header: value}
            response = await api.client.get("/v1/threads", headers=headers)
            assert_error(response, 400, "bad_request")
        ok = await api.client.get("/v1/threads", headers=auth(key, **{header: "x" * 64}))
        assert ok.status_code == 200


async def test_a_bad_client_header_is_400_even_on_a_write_and_appends_nothing(api: Api) -> None:
    key = await api.key()
    head = api.runtime.store.head()
    response = await api.client.post(
        "/v1/threads", json={}, headers=auth(key, **{"X-Nome-Client-Surface": "x" * 65})
    )
    assert_error(response, 400, "bad_request")
    assert api.runtime.store.head() == head


async def test_a_callers_request_id_is_echoed_and_a_bad_one_replaced(api: Api) -> None:
    key = await api.key()
    response = await api.client.get(
        "/v1/threads/00000000-0000-0000-0000-000000000000",
        headers=auth(key, **{"X-Request-Id": "trace-123"}),
    )
    body = assert_error(response, 404, "not_found")
    assert body["request_id"] == "trace-123"
    response = await api.client.get(
        "/v1/threads/00000000-0000-0000-0000-000000000000",
        headers=auth(key, **{"X-Request-Id": "bad id with spaces"}),
    )
    body = assert_error(response, 404, "not_found")
    assert body["request_id"] != "bad id with spaces"
