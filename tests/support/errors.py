"""The one error body of API.md §0, as every failing response must carry it."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    issues: bool = False,
    details: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The response is the contract's error: status, JSON content type, exact body keys
    (with `details`, the keys a code adds, such as 402's `required` and `available`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body: dict[str, Any] = response.json()
    expected = {"error", "code", "request_id"} | ({"issues"} if issues else set()) | details
    assert set(body) == expected, body
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    assert body["request_id"] and body["request_id"] == response.headers["x-request-id"]
    return body
