"""The OpenAPI document at /schema/openapi.json, made to say what the server does.

Litestar writes most of it from the route handlers; three things here make it exact:

- `MsgspecSchemas` documents every msgspec Struct by msgspec's own JSON Schema, the rules
  msgspec enforces when it decodes a body (`additionalProperties: false` for `Strict`
  bodies, string and list bounds, enums), where Litestar's generator drops most of them.
- `ContractDocs` adds to every route, once for all, what the gateway and the error map make
  it answer: the error body of API.md §0 on each status it can return, the bearer scheme on
  the routes that need a key, the headers the gateway reads, and no body for a 204. A route
  states only what is its own: `errors(...)` for statuses its command can add (402, 409, a
  404 for an id named in its body) and the facts `IDEMPOTENT`, `RESUMABLE` and
  `SSE_OR_NDJSON` in its `opt`, from which its headers, parameters and media types follow.
- `config()` declares the security schemes and answers every other /schema path (Litestar's
  swagger, redoc and elements pages among them) with the JSON 404 of API.md §0.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
import msgspec.inspect as mi
from litestar import Response, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.plugins import OpenAPISchemaPlugin, ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.typing import FieldDefinition

from nome_api.errors import ApiError, ErrorBody

# Facts a route states in its `opt`; ContractDocs derives what each implies.
IDEMPOTENT: dict[str, Any] = {"idempotent": True}  # takes Idempotency-Key (API.md §0)
RESUMABLE: dict[str, Any] = {"resumable": True}  # resumes after Last-Event-ID or ?after=
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# The success answer comes as either, by content negotiation. (Not the handler's `media_type`:
# Litestar lets that override the one a Stream is made with.)
SSE_OR_NDJSON: dict[str, Any] = {"media_types": (SSE, NDJSON)}
BEARER = "bearer"
STREAM_TOKEN = "streamToken"  # noqa: S105 (a scheme's name, not a secret)

_ERRORS: dict[int, str] = {
    400: "bad_request: malformed JSON, a bad query parameter, header or cursor",
    401: "unauthorized: no key, or an unknown or revoked one",
    402: "payment_required: insufficient_credits ({required, available}) or billing_inactive",
    403: "forbidden: the key lacks the role this needs",
    404: "not_found: no such resource in the caller's tenant",
    409: "conflict, run_in_progress ({active_run_id}), already_resolved or idempotency_mismatch",
    413: "payload_too_large: the body is over NOME_MAX_BODY_BYTES",
    422: "validation_failed: the body does not fit its schema; `issues` says where",
    429: "rate_limited: over NOME_RATE_LIMIT requests a minute for this key",
    503: "unavailable: the event store or the read models did not answer in time",
}
_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0), description="seconds to wait"
)
_ERROR_HEADERS: dict[str, dict[str, OpenAPIHeader]] = {
    "401": {"WWW-Authenticate": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))},
    "429": {"Retry-After": _RETRY_AFTER},
    "503": {"Retry-After": _RETRY_AFTER},
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error answers of these statuses, each with the error body of API.md §0."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description=_ERRORS[status],
            generate_examples=False,
            media_type="application/json",
        )
        for status in statuses
    }


def _header(name: str, schema: Schema, description: str) -> Parameter:
    return Parameter(name=name, param_in="header", schema=schema, description=description)


_PRINTABLE = Schema(
    type=OpenAPIType.STRING, min_length=1, max_length=64, pattern="^[\\x20-\\x7e]{1,64}$"
)
# Read by the gateway on every request (API.md §0): build identity, then read-your-writes.
_CLIENT_HEADERS = [
    _header("X-Nome-Client-Surface", _PRINTABLE, "the client's surface: web, desktop, cli, ios"),
    _header("X-Nome-Client-Version", _PRINTABLE, "the client's version (semver)"),
    _header("X-Nome-Client-Revision", _PRINTABLE, "the client's VCS revision"),
]
_MIN_POSITION = _header(
    "X-Nome-Min-Position",
    Schema(type=OpenAPIType.INTEGER, minimum=0),
    "wait (up to 5 s, else 503) until the read models have this log position",
)
_IDEMPOTENCY_KEY = _header(
    "Idempotency-Key",
    Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    "the same key and body within 24 h answer the first response again",
)
_RESUME = [
    _header(
        "Last-Event-ID",
        Schema(type=OpenAPIType.STRING, pattern="^[0-9]+$"),
        "resume after this event id",
    ),
    Parameter(
        name="after",
        param_in="query",
        schema=Schema(type=OpenAPIType.STRING, pattern="^[0-9]+$"),
        description="resume after this event id (Last-Event-ID wins)",
    ),
]


# Ids an answer carries that another route takes, as (that route, its path parameter or body
# field, the answer's field as a JSON pointer): links for clients and for schemathesis's
# stateful phase, which infers on its own only some links from an `id` to a path parameter.
LINKS: dict[str, list[tuple[str, str, str]]] = {
    "POST /v1/threads": [
        ("POST /v1/runs", "thread_id", "id"),
        ("POST /v1/chat", "thread_id", "id"),
        ("POST /v1/chat/stream", "thread_id", "id"),
        ("POST /v1/tools/call", "thread_id", "id"),
    ],
    "POST /v1/agents": [
        ("POST /v1/runs", "agent_id", "id"),
        ("POST /v1/chat", "agent_id", "id"),
        ("POST /v1/chat/stream", "agent_id", "id"),
    ],
    "POST /v1/runs": [
        ("POST /v1/runs/{run_id}/cancel", "run_id", "id"),
        ("POST /v1/runs/{run_id}/verify", "run_id", "id"),
    ],
    "POST /v1/chat": [
        ("POST /v1/runs/{run_id}/cancel", "run_id", "run/id"),
        ("POST /v1/runs/{run_id}/verify", "run_id", "run/id"),
        ("GET /v1/runs/{run_id}/replay", "run_id", "run/id"),
    ],
    "POST /v1/tools/call": [
        ("GET /v1/approvals/{approval_id}", "approval_id", "approval_id"),
        ("POST /v1/approvals/{approval_id}/approve", "approval_id", "approval_id"),
        ("POST /v1/approvals/{approval_id}/deny", "approval_id", "approval_id"),
    ],
}


class ContractDocs(ReceiveRoutePlugin):
    """Documents on each route, as the app registers it, what every route shares."""

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if "OPTIONS" in handler.http_methods and handler.handler_name == "options_handler":
                handler.before_request = _allow(route)
            elif handler.resolve_include_in_schema():
                _document(handler, route)


def _document(handler: HTTPRouteHandler, route: HTTPRoute) -> None:
    opt = handler.opt
    public = bool(opt.get("public"))
    fields = handler.parsed_fn_signature.parameters
    # Every request's build-identity headers are checked, by the gateway, before the route.
    statuses = {400}
    if not public:
        statuses |= {401, 403, 429, 503}
    if route.path_parameters:
        statuses.add(404)
    if "data" in fields:
        statuses |= {413, 422}
    if opt.get("idempotent"):
        statuses.add(409)
    derived: dict[int, ResponseSpec] = errors(*sorted(statuses))
    if handler.status_code == 204:
        derived[204] = ResponseSpec(data_container=None, description="done; no body")
    # What the route declares itself wins over what is derived.
    handler.responses = {**derived, **(handler.responses or {})}

    media_types = tuple(opt.get("media_types", ()))
    sse = SSE in (handler.media_type, *media_types)
    if not public:
        schemes = [{BEARER: []}]
        if sse and "GET" in handler.http_methods:
            # An EventSource cannot send headers: GET streams take ?stream_token= (API.md §12).
            schemes.append({STREAM_TOKEN: []})
        handler.security = schemes

    parameters = list(_CLIENT_HEADERS)
    if not public:
        parameters.append(_MIN_POSITION)
    if opt.get("idempotent"):
        parameters.append(_IDEMPOTENCY_KEY)
    if opt.get("resumable"):
        parameters += _RESUME
    # Litestar marks every body required; one with a default (`= None`) may be left out.
    body_optional = "data" in fields and fields["data"].has_default
    links = {
        # Link names follow the component name rule: letters, digits, `.`, `-`, `_`.
        re.sub(r"[^A-Za-z0-9]+", "_", target).strip("_") + f".{field}": _link(target, field, source)
        for method in handler.http_methods
        for target, field, source in LINKS.get(f"{method} {route.path_format}", [])
    }
    handler.operation_class = _operation(
        parameters, media_types, links, body_optional=body_optional
    )


def _link(target: str, field: str, source: str) -> Link:
    """A link from an answer's `source` field to `target`'s path parameter or body `field`."""
    method, path = target.split()
    # A JSON pointer in a URI fragment: `~` and `/` escaped, then `{` and `}` percent-encoded.
    pointer = quote(path.replace("~", "~0").replace("/", "~1"), safe="~")
    value = f"$response.body#/{source}"
    in_path = f"{{{field}}}" in path
    return Link(
        operation_ref=f"#/paths/{pointer}/{method.lower()}",
        parameters={f"path.{field}": value} if in_path else None,
        request_body=None if in_path else {field: value},
    )


def _operation(
    parameters: list[Parameter],
    media_types: tuple[str, ...],
    links: dict[str, Link],
    *,
    body_optional: bool,
) -> type[Operation]:
    """An Operation that adds what ResponseSpec and the signature cannot say: the headers the
    gateway reads, the media types of a negotiated success answer, links from it, headers of
    error answers, and whether the body may be left out."""

    @dataclasses.dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *parameters]
            if body_optional and isinstance(self.request_body, RequestBody):
                self.request_body.required = False
            for status, response in (self.responses or {}).items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                if status in _ERROR_HEADERS:
                    response.headers = {**(response.headers or {}), **_ERROR_HEADERS[status]}
                if not status.startswith("2"):
                    continue
                if links:
                    response.links = {**(response.links or {}), **links}
                if response.content and media_types:
                    schema = next(iter(response.content.values())).schema
                    response.content = {t: OpenAPIMediaType(schema=schema) for t in media_types}

    return Documented


def _allow(route: HTTPRoute) -> Callable[[Any], Any]:
    """Litestar's automatic OPTIONS handler answers with the methods of the route it was made
    for; a path whose handlers a router registers one by one keeps the first one's (litestar
    #4169, fixed in 3.0). Answer from the route as the app finally has it."""
    allow = ", ".join(sorted(route.methods))

    async def answer(_request: Any) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return answer


class MsgspecSchemas(OpenAPISchemaPlugin):
    """Every msgspec Struct, documented by msgspec's own JSON Schema: what msgspec checks
    when it decodes a request body (and writes when it encodes an answer)."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return isinstance(value, type) and issubclass(value, msgspec.Struct)

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return not field_definition.is_union and field_definition.is_subclass_of(msgspec.Struct)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        struct = field_definition.annotation
        nested = list(_structs_in(mi.type_info(struct)))
        refs, defs = msgspec.json.schema_components(
            [struct, *nested], schema_hook=_any_object, ref_template="{name}"
        )
        own = defs[refs[0]["$ref"]]
        # Structs inside this one are Litestar's components too, named as Litestar names them.
        by_name = {ref["$ref"]: cls for ref, cls in zip(refs[1:], nested, strict=True)}

        def reference(name: str) -> Schema | Reference:
            annotation = FieldDefinition.from_annotation(by_name[name])
            return schema_creator.for_field_definition(annotation)  # type: ignore[no-any-return]

        # Registered (and so referable) before its properties, which may refer back to it.
        schema: Schema = schema_creator.create_component_schema(
            field_definition, required=list(own.get("required", [])), property_fields={}
        )
        converted = _schema(own, reference)
        assert isinstance(converted, Schema)
        for field in dataclasses.fields(Schema):
            value = getattr(converted, field.name)
            if value is not None and field.name not in ("title", "required", "type"):
                setattr(schema, field.name, value)
        return schema


def _any_object(t: Any) -> dict[str, Any]:
    """`object` (as in `dict[str, object]`): msgspec decodes any JSON value into it. (An
    empty schema says so too, but msgspec takes an empty answer for no answer.)"""
    if t is object:
        return {"description": "any JSON value"}
    raise TypeError(f"no JSON Schema for {t!r}")


def _structs_in(t: mi.Type) -> Iterator[Any]:
    """The Struct types one Struct's fields name (not those inside them: each is its own
    component)."""
    assert isinstance(t, mi.StructType)
    seen: set[int] = set()
    pending: list[mi.Type] = [f.type for f in t.fields]
    while pending:
        item = pending.pop()
        if isinstance(item, mi.StructType):
            if id(item.cls) not in seen:
                seen.add(id(item.cls))
                yield item.cls
        elif isinstance(item, mi.Metadata):
            pending.append(item.type)
        elif isinstance(item, mi.UnionType | mi.TupleType):
            pending.extend(item.types if isinstance(item, mi.UnionType) else item.item_types)
        elif isinstance(item, mi.CollectionType):
            pending.append(item.item_type)
        elif isinstance(item, mi.DictType):
            pending += [item.key_type, item.value_type]


def _key(field: dataclasses.Field[Any]) -> str:
    alias = field.metadata.get("alias")
    if alias:
        return str(alias)
    head, *rest = field.name.split("_")
    return "$ref" if field.name == "ref" else head + "".join(p.title() for p in rest)


# JSON Schema keyword -> Schema field, and which keywords hold subschemas.
_FIELD_OF = {_key(f): f.name for f in dataclasses.fields(Schema)}
_ONE = {"items", "additionalProperties", "propertyNames", "not", "contains", "if", "then", "else"}
_MANY = {"anyOf", "oneOf", "allOf", "prefixItems"}
_NAMED = {"properties", "patternProperties"}


def _schema(
    doc: Mapping[str, Any], reference: Callable[[str], Schema | Reference]
) -> Schema | Reference:
    """A JSON Schema (as msgspec writes it) as Litestar's Schema, `$ref`s resolved."""
    if "$ref" in doc:
        return reference(doc["$ref"])
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _MANY:
            value = [_schema(v, reference) for v in value]
        elif key in _NAMED:
            value = {k: _schema(v, reference) for k, v in value.items()}
        elif key in _ONE and isinstance(value, Mapping):
            value = _schema(value, reference)
        elif key == "type":
            value = (
                [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
            )
        values[_FIELD_OF[key]] = value
    return Schema(**values)


def _no_such_page(response: Response[Any]) -> Response[Any]:
    """Litestar answers an unknown /schema path with an HTML page; the contract says JSON."""
    if response.status_code == 404:
        raise ApiError(404, "no such route")
    return response


def config(title: str, version: str) -> OpenAPIConfig:
    """The document's configuration: JSON only, with its security schemes."""
    return OpenAPIConfig(
        title=title,
        version=version,
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        # No HTML pages: /schema/swagger, /redoc and /elements would load their scripts from
        # a CDN into a page where people paste API keys. Any OpenAPI viewer reads the JSON.
        openapi_router=Router(
            "/schema", route_handlers=[], include_in_schema=False, after_request=_no_such_page
        ),
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="nome_sk_ API key, or an OIDC JWT when NOME_AUTH=oidc",
                ),
                STREAM_TOKEN: SecurityScheme(
                    type="apiKey",
                    name="stream_token",
                    security_scheme_in="query",
                    description="a 60 s token for one SSE path, from POST /v1/stream-tokens",
                ),
            }
        ),
    )
