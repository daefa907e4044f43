"""The package manifest `nome-package.json` (API.md §6a): read once, at import, into the plain
values the marketplace's events carry, or refused with every issue and where it is.

The JSON Schema next to this module (nome-package.schema.json) says most of it and is what
publishers point their editors at; the rest it cannot say is checked here: SemVer versions,
unique tool names, each tool's `input_schema` a valid schema of an object, and URLs a server
can be called at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import msgspec
import semver
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from nome_core.errors import Invalid
from nome_core.events import HASH_PREFIX, sha256_hex
from nome_core.tenants.plans import Entitlement

MAX_BYTES: Final = 256 * 1024
# Deeper than any real manifest, and shallow enough that the validators' recursion is safe.
MAX_DEPTH: Final = 64
# Issue messages go into the import's events: a long offending value is not repeated whole.
MAX_MESSAGE: Final = 300

Connector = Literal["github", "slack", "google", "whatsapp"]
CONNECTORS: Final[tuple[Connector, ...]] = get_args(Connector)
EndpointType = Literal["http", "mcp"]

Path = list[str | int]

# The schema's patterns, in words: "does not match '^[hH][tT]...'" helps nobody.
_PATTERNS: Final = {
    "^[a-z0-9][a-z0-9-]{1,62}$": (
        "must be 2 to 63 lowercase letters, digits and hyphens, starting with a letter or digit"
    ),
    "^[a-z][a-z0-9_]{0,62}$": (
        "must be 1 to 63 lowercase letters, digits and underscores, starting with a letter"
    ),
    "^[hH][tT][tT][pP][sS]?://": "must be an http:// or https:// URL",
}


# omit_defaults: a manifest encodes as its document did, so that leaving out an optional
# field and writing its default give one manifest_hash.
class Endpoint(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: EndpointType
    url: str
    # mcp only: the server's name for the tool, when it is not the package's.
    tool: str | None = None


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    description: str
    input_schema: dict[str, Any]
    dangerous: bool
    endpoint: Endpoint


class Requires(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    entitlements: tuple[Entitlement, ...] = ()
    connectors: tuple[Connector, ...] = ()


class Manifest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    version: str
    description: str
    publisher: str
    tools: tuple[ToolSpec, ...]
    homepage: str | None = None
    requires: Requires = Requires()


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with a manifest, at its JSON path (`["tools", 0, "name"]`)."""

    path: Path
    message: str


class TooLarge(Invalid):
    code = "too_large"

    def __init__(self, size: int) -> None:
        super().__init__(f"nome-package.json is {size} bytes; at most {MAX_BYTES} are read")
        self.size = size


class ManifestInvalid(Invalid):
    code = "manifest_invalid"

    def __init__(self, issues: list[Issue]) -> None:
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        message = f"nome-package.json is invalid: {_where(first.path)}: {first.message}{more}"
        super().__init__(message, issues=msgspec.to_builtins(issues))
        self.issues = issues


def _load_validator() -> Draft202012Validator:
    text = resources.files("nome_core.marketplace").joinpath("nome-package.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


_VALIDATOR: Final = _load_validator()


def parse(raw: bytes) -> Manifest:
    """The manifest in `raw`, or TooLarge, or ManifestInvalid listing every issue found."""
    if len(raw) > MAX_BYTES:
        raise TooLarge(len(raw))
    document = _decode(raw)
    issues = [*_schema_issues(document), *_rule_issues(document)]
    if issues:
        raise ManifestInvalid(sorted(issues, key=lambda issue: _path_key(issue.path)))
    return msgspec.convert(document, Manifest)


def tool_hash(tool: ToolSpec) -> str:
    """What an installed tool is pinned to: an MCP server's definitions must hash the same."""
    fields = {
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.input_schema,
        "dangerous": tool.dangerous,
    }
    return HASH_PREFIX + sha256_hex(fields)


def manifest_hash(manifest: Manifest) -> str:
    """A version's content: the same name and version with another hash is refused."""
    content = msgspec.to_builtins(manifest)
    # omit_defaults leaves out only the default instance itself: an equal Requires() that
    # was decoded or built elsewhere would be encoded, and equal manifests must hash equal.
    if manifest.requires == Requires():
        content.pop("requires", None)
    return HASH_PREFIX + sha256_hex(content)


def _decode(raw: bytes) -> Any:
    try:
        # A leading byte order mark is allowed (RFC 8259 §8.1): some editors write one.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8: byte {raw[exc.start]:#04x} at offset {exc.start}") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _invalid(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise _invalid(f"not JSON: {exc}") from None
    except RecursionError:
        raise _invalid(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_tree(document)
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Parsers disagree on which of two equal keys wins; the manifest must not be read two
    ways (one by a reviewer, another by the importer)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {_quoted(key)} appears twice in one object")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(document: Any) -> None:
    """Refuse what JSON allows and the rest cannot take: nesting deep enough to exhaust the
    validators' recursion, and a `\\ud800` escape with no pair, which decodes to a string
    that is not Unicode text and that no hash or event could encode."""
    stack: list[tuple[Any, Path]] = [(document, [])]
    while stack:
        value, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise _invalid(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str) and not _is_text(value):
            raise ManifestInvalid([Issue(path=path, message=_NOT_TEXT)])
        if isinstance(value, dict):
            for key, child in value.items():
                if not _is_text(key):
                    raise ManifestInvalid([Issue(path=path, message=f"a key {_NOT_TEXT}")])
                stack.append((child, [*path, key]))
        elif isinstance(value, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(value))


_NOT_TEXT: Final = "holds an unpaired surrogate escape (\\ud800 to \\udfff), which is not text"


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _schema_issues(document: Any) -> Iterator[Issue]:
    for error in _VALIDATOR.iter_errors(document):
        yield from _explained(error)


def _explained(error: ValidationError) -> Iterator[Issue]:
    """A schema error as issues. An endpoint that matches neither branch of its oneOf gets
    what is wrong with the branch its `type` chose, rather than that it matches neither."""
    chosen = error.instance.get("type") if isinstance(error.instance, dict) else None
    if error.validator == "oneOf" and chosen in get_args(EndpointType):
        branch = get_args(EndpointType).index(chosen)
        for sub in error.context or ():
            if sub.relative_schema_path[0] == branch:
                yield from _explained(sub)
        return
    if error.validator == "oneOf":
        yield Issue(path=[*error.absolute_path, "type"], message="must be 'http' or 'mcp'")
        return
    yield Issue(path=list(error.absolute_path), message=_short(_in_words(error)))


def _in_words(error: ValidationError) -> str:
    """The validator's message, except where it would quote a long value before saying what
    is wrong with it, or quote a pattern instead of saying what it means."""
    limit = error.validator_value
    match error.validator:
        case "pattern" if limit in _PATTERNS:
            return f"{_quoted(error.instance)} {_PATTERNS[limit]}"
        case "maxLength":
            return f"must be at most {limit} characters long"
        case "minLength":
            return "must not be empty" if limit == 1 else f"must be at least {limit} characters"
        case "maxItems":
            return f"must have at most {limit} items"
        case "minItems":
            return "must not be empty" if limit == 1 else f"must have at least {limit} items"
    return str(error.message)


def _rule_issues(document: Any) -> Iterator[Issue]:
    """What the schema cannot say. Read defensively: the document may fail the schema too,
    and those issues are listed with these."""
    if not isinstance(document, dict):
        return
    version = document.get("version")
    if isinstance(version, str):
        try:
            semver.Version.parse(version)
        except ValueError:
            message = f"{_quoted(version)} is not a semantic version (SemVer 2.0.0, such as 1.2.3)"
            yield Issue(path=["version"], message=_short(message))
    yield from _url_issues(document.get("homepage"), ["homepage"])
    tools = document.get("tools")
    if not isinstance(tools, list):
        return
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        name = tool.get("name")
        if isinstance(name, str):
            if name in seen:
                message = f"{name!r} is the name of tools[{seen[name]}] already"
                yield Issue(path=["tools", i, "name"], message=_short(message))
            else:
                seen[name] = i
        input_schema = tool.get("input_schema")
        if isinstance(input_schema, dict):
            yield from _input_schema_issues(input_schema, ["tools", i, "input_schema"])
        endpoint = tool.get("endpoint")
        if isinstance(endpoint, dict):
            yield from _url_issues(endpoint.get("url"), ["tools", i, "endpoint", "url"])


def _input_schema_issues(schema: dict[str, Any], path: Path) -> Iterator[Issue]:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        inner = _where(list(exc.absolute_path))
        message = f"not a valid JSON Schema (Draft 2020-12) at {inner}: {exc.message}"
        yield Issue(path=path, message=_short(message))
        return
    if schema.get("type") != "object":
        yield Issue(path=path, message='the arguments\' schema must have "type": "object"')


def _url_issues(url: Any, path: Path) -> Iterator[Issue]:
    """A URL the schema let through (a string starting http:// or https://) that cannot be
    called, or that would put a credential into the log."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return
    if any(c.isspace() or not c.isprintable() for c in url):
        yield Issue(path=path, message="a URL must not contain spaces or control characters")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        yield Issue(path=path, message=_short(f"not a valid URL: {exc}"))
        return
    if not parts.hostname:
        yield Issue(path=path, message="a URL must name a host")
    elif parts.username is not None or parts.password is not None:
        yield Issue(path=path, message="a URL must not carry credentials (user:password@)")


def _invalid(message: str) -> ManifestInvalid:
    return ManifestInvalid([Issue(path=[], message=message)])


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def _where(path: Path) -> str:
    return "/".join(map(str, path)) or "(root)"


def _path_key(path: Path) -> list[tuple[bool, int, str]]:
    # Indexes before names, each in its own order; paths of one prefix shortest first.
    return [
        (isinstance(p, str), p if isinstance(p, int) else 0, p if isinstance(p, str) else "")
        for p in path
    ]
