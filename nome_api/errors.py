"""The one error map: every failure becomes the error body of API.md §0, or, on the
OpenAI-compatible routes of API.md §10, the same error in OpenAI's shape."""

from __future__ import annotations

import re
import sqlite3
import uuid
from typing import Any

import msgspec
import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from psycopg_pool import PoolTimeout

from nome_core.errors import DomainError
from nome_core.tools.builtin import ArgumentsInvalid
from projections.paging import InvalidCursor

log = structlog.get_logger("nome.api")

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}

STATUS_OF_CODE: dict[str, int] = {
    "run_in_progress": 409,
    "already_resolved": 409,
    "idempotency_mismatch": 409,
    "insufficient_credits": 402,
    "billing_inactive": 402,
    "limit_reached": 403,
    "entitlement_required": 403,
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "validation_failed": 422,
    "gone": 410,
    "unavailable": 503,
}
# Seconds a 503 asks the client to wait before retrying (with its Idempotency-Key).
RETRY_AFTER_S = "1"


class Issue(msgspec.Struct):
    path: list[str | int]
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The error body of every 4xx and 5xx."""

    error: str
    code: str
    request_id: str | None = None
    issues: list[Issue] | None = None
    active_run_id: str | None = None
    # 402 insufficient_credits: what the run needs and what the tenant has.
    required: int | None = None
    available: int | None = None
    # 403 limit_reached: the limit and how many the tenant has.
    limit: int | None = None
    current: int | None = None
    # 403 entitlement_required: what the tenant lacks.
    missing: list[str] | None = None


class ApiError(Exception):
    """Raised by routes and middleware for an error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "bad_request")
        self.issues = issues
        self.headers = headers or {}
        self.extra = extra or {}
        # The request parameter at fault, in OpenAI's error shape (API.md §10).
        self.param = param


# API.md §10: the routes OpenAI's clients call answer errors in OpenAI's shape, which those
# clients parse; the status and NOME's code are the same as anywhere else.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
OPENAI_TYPES: dict[int, str] = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    """The error body of the OpenAI-compatible routes (API.md §10)."""

    error: OpenAIErrorDetail


def speaks_openai(path: str) -> bool:
    """Whether a path is one of API.md §10's, whose errors take OpenAI's shape."""
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS)


def openai_error(status: int, message: str, code: str | None, param: str | None = None) -> bytes:
    """An error in OpenAI's shape: its `type` follows from the status."""
    kind = OPENAI_TYPES.get(status) or (
        "server_error" if status >= 500 else "invalid_request_error"
    )
    detail = OpenAIErrorDetail(message=message, type=kind, param=param, code=code)
    return msgspec.json.encode(OpenAIError(error=detail))


def _openai_answer(error: ApiError, headers: dict[str, str]) -> Response[Any]:
    message, param = error.message, error.param
    # What the contract's body says in fields of its own (402's required and available, a
    # 409's active_run_id), said in the message: OpenAI's error object has no place for it.
    details = ", ".join(f"{k}: {v}" for k, v in error.extra.items() if v is not None)
    if details:
        message = f"{message} ({details})"
    if error.issues:
        issue = error.issues[0]
        message = f"{message}: {issue.message}"
        param = param or _param(issue.path)
    if error.status == 409:
        # The OpenAI SDKs retry a 409 unless told not to; here it is never worth it.
        headers["x-should-retry"] = "false"
    return Response(
        content=openai_error(error.status, message, error.code, param),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


def _param(path: list[str | int]) -> str | None:
    """An issue's path as OpenAI names parameters: `messages[0].content`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def error_response(request: Request[Any, Any, Any] | None, error: ApiError) -> Response[Any]:
    headers = dict(error.headers)
    request_id = request_id_of(request)
    if request_id is None:
        # Routing failures (404, 405) are answered before the gateway gives the request an id.
        request_id = uuid.uuid4().hex
        headers["X-Request-Id"] = request_id
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if request is not None and speaks_openai(request.scope["path"]):
        return _openai_answer(error, headers)
    body = ErrorBody(
        error=error.message,
        code=error.code,
        request_id=request_id,
        issues=error.issues,
        active_run_id=error.extra.get("active_run_id"),
        required=error.extra.get("required"),
        available=error.extra.get("available"),
        limit=error.extra.get("limit"),
        current=error.extra.get("current"),
        missing=error.extra.get("missing"),
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


def request_id_of(request: Request[Any, Any, Any] | None) -> str | None:
    if request is None:
        return None
    return request.scope.get("state", {}).get("request_id")  # type: ignore[no-any-return]


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
# `[...]` is msgspec's "some key of this object": the path stops at the object.
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def issues_from_msgspec(text: str, *, strip: str = "") -> list[Issue]:
    """Turn a msgspec ValidationError text into an issue with a JSON path."""
    match = _AT.match(text)
    message, raw_path = (match.group("message"), match.group("path") or "") if match else (text, "")
    if strip and raw_path.startswith(strip):
        raw_path = raw_path[len(strip) :]
    path: list[str | int] = []
    for name, index in _PART.findall(raw_path):
        if name:
            path.append(name)
        elif index:
            path.append(int(index))
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        path.append(unknown.group("name"))
    return [Issue(path=path, message=message)]


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = [
        item
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    # Query, path and header parameters are the request line, not a body to validate: 400.
    params = [item for item in extra if item.get("source") in ("query", "path", "header")]
    if params:
        names = ", ".join(f"{item.get('key', '')} ({item.get('message', '')})" for item in params)
        return error_response(request, ApiError(400, f"invalid request parameters: {names}"))
    cause = exc.__cause__
    if isinstance(cause, msgspec.ValidationError):
        text = str(cause)
        if "missing required field `data`" in text:
            return error_response(request, ApiError(400, "a JSON request body is required"))
        issues = issues_from_msgspec(text, strip=".data")
        return error_response(request, ApiError(422, "the request is not valid", issues=issues))
    return error_response(request, ApiError(400, str(exc.detail)))


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    message = str(exc.detail) if exc.detail else CODES.get(status, "error")
    if status == 404:
        message = "no such route"
    elif status == 405:
        message = f"method {request.method} is not allowed here"
    elif status == 413:
        message = "the request body is too large"
    headers = dict(exc.headers or {})
    return error_response(request, ApiError(status, message, headers=headers))


def _domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    status = STATUS_OF_CODE.get(exc.code, 400)
    if isinstance(exc, ArgumentsInvalid):
        issues = issues_from_msgspec(exc.message)
        for issue in issues:
            issue.path = ["arguments", *issue.path]
        return error_response(
            request, ApiError(422, "the arguments do not fit the tool", issues=issues)
        )
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return error_response(
        request,
        ApiError(status, exc.message, code=exc.code, extra=dict(exc.details), headers=headers),
    )


def _store_down(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database refused, timed out or went away: nothing more is known of a command's
    outcome than that it may have failed, so the client retries with its Idempotency-Key."""
    log.warning("event_store_unavailable", error=exc.__class__.__name__, path=request.url.path)
    return error_response(
        request,
        ApiError(
            503,
            "the event store is unavailable; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        ),
    )


def _cursor(request: Request[Any, Any, Any], exc: InvalidCursor) -> Response[Any]:
    return error_response(request, ApiError(400, "invalid cursor"))


def _api(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return error_response(request, exc)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled_error", path=request.url.path, request_id=request_id_of(request))
    return error_response(request, ApiError(500, "internal error"))


def _unauthorized(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    return error_response(request, ApiError(401, str(exc.detail) or "unauthorized"))


def _forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    return error_response(request, ApiError(403, str(exc.detail) or "forbidden"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api,
    DomainError: _domain,
    InvalidCursor: _cursor,
    PersistenceError: _store_down,
    psycopg.Error: _store_down,
    PoolTimeout: _store_down,
    sqlite3.OperationalError: _store_down,
    ValidationException: _validation,
    NotAuthorizedException: _unauthorized,
    PermissionDeniedException: _forbidden,
    HTTPException: _http,
    Exception: _internal,
}


def answer_for(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The error response for any exception, by the same map the routes use (for errors
    raised outside a route: in the gateway, before the route runs)."""
    for kind in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None:
            return handler(request, exc)  # type: ignore[no-any-return]
    return _internal(request, exc)
