"""The operator console (API.md §12): its page and assets, and the stream tokens its
EventSources open SSE routes with."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Response, Router, post
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody
from litestar.static_files import create_static_files_router

from nome_api import stream_tokens
from nome_api.context import Req, caller_of, json_bytes, runtime_of
from nome_api.errors import ApiError, Issue
from nome_api.schemas import Strict
from nome_core.keys import secrets as key_secrets

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
# The page holds an API key in sessionStorage: only its own scripts may run, and it talks
# only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# The SSE paths a token may open (stream_tokens.STREAM_PATHS), as the body's documented bound.
StreamPath = Annotated[
    str,
    msgspec.Meta(
        pattern="^(?:" + "|".join(p.pattern for p, _ in stream_tokens.STREAM_PATHS) + ")$"
    ),
]


class StreamTokenRequest(Strict):
    path: StreamPath


class StreamToken(msgspec.Struct, kw_only=True):
    token: str
    expires_at: str


_encode = msgspec.json.Encoder().encode


@post(
    "/v1/stream-tokens",
    status_code=201,
    summary="A token that opens one SSE path for 60 s (for EventSource)",
    tags=["console"],
)
async def create_stream_token(
    request: Req, data: JSONBody[StreamTokenRequest]
) -> Response[StreamToken]:
    """Issue a stream token for one SSE path the caller may read. The answer's
    X-Nome-Position is the log's head, so a page can open the workspace stream right after
    what it has just read (`?after=`) instead of from the start of the log."""
    runtime, caller = runtime_of(request), caller_of(request)
    role = stream_tokens.role_for(data.path)
    if role is None:
        raise ApiError(
            422,
            "the request is not valid",
            issues=[
                Issue(
                    path=["path"],
                    message="must be /v1/events, /v1/runs/{id}/stream or /v1/runs/{id}/replay",
                )
            ],
        )
    if not caller.can(role):
        raise ApiError(403, f"this stream needs the {role} role")
    # The gateway let this request in on its bearer token: an API key (whose hash is how
    # the key is looked up again when the stream token is redeemed) or an OIDC JWT.
    bearer = request.headers.get("authorization", "").partition(" ")[2].strip()
    if key_secrets.is_well_formed(bearer):
        key_sha256: str | None = key_secrets.digest(bearer)
        identity = key_sha256
    else:
        key_sha256 = None
        identity = hashlib.sha256(caller.key_id.encode()).hexdigest()
    token, expires_at = await stream_tokens.issue(
        runtime,
        stream_tokens.Grant(
            key_id=caller.key_id,
            tenant_id=caller.tenant_id,
            name=caller.name,
            roles=sorted(caller.roles),
            path=data.path,
            key_sha256=key_sha256,
            identity=identity,
        ),
    )
    head = await runtime.log.head()
    return json_bytes(
        _encode(StreamToken(token=token, expires_at=expires_at)), status=201, position=head
    )


def _page_headers(response: Response[object]) -> Response[object]:
    response.headers.update(_PAGE_HEADERS)
    return response


pages = create_static_files_router(
    path="/console",
    directories=[CONSOLE_DIR],
    html_mode=True,
    name="console",
    opt={"public": True},
    include_in_schema=False,
    # Assets change with the installed version; the browser revalidates them on each load.
    cache_control=CacheControlHeader(no_cache=True),
    after_request=_page_headers,  # type: ignore[arg-type]
)

router = Router(path="/", route_handlers=[pages, create_stream_token])
