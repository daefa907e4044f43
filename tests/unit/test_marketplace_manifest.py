"""The package manifest (API.md §6a): what parses, what is refused and where, and the hashes
that pin a version's content and each tool's definition."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from importlib import resources
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from nome_core.marketplace.manifest import (
    CONNECTORS,
    MAX_BYTES,
    Endpoint,
    Manifest,
    ManifestInvalid,
    TooLarge,
    ToolSpec,
    manifest_hash,
    parse,
    tool_hash,
)
from nome_core.tenants.plans import ENTITLEMENTS


def _tool(name: str = "forecast", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Today's forecast for a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "dangerous": False,
        "endpoint": {"type": "http", "url": "https://tools.example.com/weather"},
        **changes,
    }


def _document(**changes: Any) -> dict[str, Any]:
    return {
        "name": "weather-demo",
        "version": "1.0.0",
        "description": "Weather tools.",
        "publisher": "Example Inc.",
        "homepage": "https://example.com/weather",
        "tools": [
            _tool(),
            _tool(
                "alert",
                dangerous=True,
                endpoint={"type": "mcp", "url": "https://mcp.example.com/mcp", "tool": "send"},
            ),
        ],
        "requires": {"entitlements": ["marketplace"], "connectors": ["slack"]},
        **changes,
    }


def _raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def _issues(raw: bytes) -> list[tuple[list[str | int], str]]:
    with pytest.raises(ManifestInvalid) as refused:
        parse(raw)
    assert refused.value.code == "manifest_invalid"
    return [(issue.path, issue.message) for issue in refused.value.issues]


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path
        target: Any = document
        for step in parents:
            target = target[step]
        target[last] = value

    return change


def _drop(path: list[str | int]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path
        target: Any = document
        for step in parents:
            target = target[step]
        del target[last]

    return change


def test_a_valid_manifest_parses_into_its_values() -> None:
    manifest = parse(_raw(_document()))

    assert manifest.name == "weather-demo"
    assert manifest.version == "1.0.0"
    assert manifest.homepage == "https://example.com/weather"
    assert [t.name for t in manifest.tools] == ["forecast", "alert"]
    assert manifest.tools[0].endpoint == Endpoint(
        type="http", url="https://tools.example.com/weather"
    )
    assert manifest.tools[1].dangerous is True
    assert manifest.tools[1].endpoint.tool == "send"
    assert manifest.tools[0].input_schema["required"] == ["city"]
    assert manifest.requires.entitlements == ("marketplace",)
    assert manifest.requires.connectors == ("slack",)


def test_optional_fields_may_be_left_out() -> None:
    document = _document()
    del document["homepage"], document["requires"]

    manifest = parse(_raw(document))

    assert manifest.homepage is None
    assert manifest.requires.entitlements == () and manifest.requires.connectors == ()


def test_a_leading_byte_order_mark_is_allowed() -> None:
    assert parse(b"\xef\xbb\xbf" + _raw(_document())).name == "weather-demo"


REFUSALS: list[tuple[str, Callable[[dict[str, Any]], None], list[str | int]]] = [
    ("name with capitals", _set(["name"], "Weather"), ["name"]),
    ("name of one character", _set(["name"], "w"), ["name"]),
    ("name starting with a hyphen", _set(["name"], "-weather"), ["name"]),
    ("name of 64 characters", _set(["name"], "w" * 64), ["name"]),
    ("name missing", _drop(["name"]), []),
    ("version not semver", _set(["version"], "1.0"), ["version"]),
    ("version with a v", _set(["version"], "v1.0.0"), ["version"]),
    ("version with a leading zero", _set(["version"], "01.0.0"), ["version"]),
    ("version a number", _set(["version"], 1), ["version"]),
    ("description missing", _drop(["description"]), []),
    ("description empty", _set(["description"], ""), ["description"]),
    ("description too long", _set(["description"], "d" * 2001), ["description"]),
    ("publisher missing", _drop(["publisher"]), []),
    ("publisher not a string", _set(["publisher"], ["a"]), ["publisher"]),
    ("homepage not http", _set(["homepage"], "ftp://example.com"), ["homepage"]),
    ("homepage javascript", _set(["homepage"], "javascript:alert(1)"), ["homepage"]),
    ("homepage too long", _set(["homepage"], "https://e.com/" + "a" * 2040), ["homepage"]),
    ("unknown top-level field", _set(["license"], "MIT"), []),
    ("tools missing", _drop(["tools"]), []),
    ("no tools", _set(["tools"], []), ["tools"]),
    ("65 tools", _set(["tools"], [_tool(f"t{i}") for i in range(65)]), ["tools"]),
    ("tool name with capitals", _set(["tools", 0, "name"], "Forecast"), ["tools", 0, "name"]),
    ("tool name with a hyphen", _set(["tools", 0, "name"], "get-it"), ["tools", 0, "name"]),
    ("tool name starting with a digit", _set(["tools", 0, "name"], "1x"), ["tools", 0, "name"]),
    ("tool name of 64 characters", _set(["tools", 0, "name"], "t" * 64), ["tools", 0, "name"]),
    ("duplicate tool name", _set(["tools", 1, "name"], "forecast"), ["tools", 1, "name"]),
    ("unknown tool field", _set(["tools", 1, "cost"], 3), ["tools", 1]),
    ("tool description missing", _drop(["tools", 0, "description"]), ["tools", 0]),
    (
        "tool description too long",
        _set(["tools", 0, "description"], "d" * 2001),
        ["tools", 0, "description"],
    ),
    ("dangerous not a boolean", _set(["tools", 0, "dangerous"], "no"), ["tools", 0, "dangerous"]),
    ("dangerous missing", _drop(["tools", 0, "dangerous"]), ["tools", 0]),
    (
        "input_schema not an object",
        _set(["tools", 0, "input_schema"], ["city"]),
        ["tools", 0, "input_schema"],
    ),
    (
        "input_schema not a JSON Schema",
        _set(["tools", 0, "input_schema"], {"type": "objekt"}),
        ["tools", 0, "input_schema"],
    ),
    (
        "input_schema with a bad keyword value",
        _set(["tools", 0, "input_schema"], {"type": "object", "required": "city"}),
        ["tools", 0, "input_schema"],
    ),
    (
        "input_schema of a string",
        _set(["tools", 0, "input_schema"], {"type": "string"}),
        ["tools", 0, "input_schema"],
    ),
    (
        "input_schema without a type",
        _set(["tools", 0, "input_schema"], {"properties": {}}),
        ["tools", 0, "input_schema"],
    ),
    ("endpoint missing", _drop(["tools", 0, "endpoint"]), ["tools", 0]),
    (
        "endpoint of another type",
        _set(["tools", 0, "endpoint", "type"], "grpc"),
        ["tools", 0, "endpoint", "type"],
    ),
    ("endpoint without a url", _drop(["tools", 0, "endpoint", "url"]), ["tools", 0, "endpoint"]),
    (
        "http endpoint naming an mcp tool",
        _set(["tools", 0, "endpoint", "tool"], "send"),
        ["tools", 0, "endpoint"],
    ),
    (
        "endpoint url not http",
        _set(["tools", 0, "endpoint", "url"], "ftp://example.com/x"),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "endpoint url of a file",
        _set(["tools", 1, "endpoint", "url"], "file:///etc/passwd"),
        ["tools", 1, "endpoint", "url"],
    ),
    (
        "endpoint url without a host",
        _set(["tools", 0, "endpoint", "url"], "https:///tools"),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "endpoint url with credentials",
        _set(["tools", 0, "endpoint", "url"], "https://user:secret@example.com/tools"),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "endpoint url with a space",
        _set(["tools", 0, "endpoint", "url"], "https://example.com/a tool"),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "endpoint url with a bad port",
        _set(["tools", 0, "endpoint", "url"], "https://example.com:99999/tools"),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "endpoint url too long",
        _set(["tools", 0, "endpoint", "url"], "https://e.com/" + "a" * 2040),
        ["tools", 0, "endpoint", "url"],
    ),
    (
        "mcp endpoint with an empty tool",
        _set(["tools", 1, "endpoint", "tool"], ""),
        ["tools", 1, "endpoint", "tool"],
    ),
    (
        "unknown entitlement",
        _set(["requires", "entitlements"], ["gold"]),
        ["requires", "entitlements", 0],
    ),
    (
        "unknown connector",
        _set(["requires", "connectors"], ["slack", "fax"]),
        ["requires", "connectors", 1],
    ),
    (
        "connector twice",
        _set(["requires", "connectors"], ["slack", "slack"]),
        ["requires", "connectors"],
    ),
    ("unknown requirement", _set(["requires", "gpu"], True), ["requires"]),
]


@pytest.mark.parametrize(
    ("change", "path"), [(c, p) for _, c, p in REFUSALS], ids=[name for name, _, _ in REFUSALS]
)
def test_each_rule_is_refused_with_one_issue_at_its_path(
    change: Callable[[dict[str, Any]], None], path: list[str | int]
) -> None:
    document = _document()
    change(document)

    issues = _issues(_raw(document))

    assert [p for p, _ in issues] == [path]
    assert all(message for _, message in issues)


def test_every_issue_is_listed_sorted_by_path() -> None:
    document = _document(name="Bad Name", version="one")
    document["tools"][1]["name"] = "forecast"
    document["tools"][0]["input_schema"] = {"type": "array"}
    document["tools"][0]["endpoint"]["url"] = "gopher://x"

    paths = [path for path, _ in _issues(_raw(document))]

    assert paths == [
        ["name"],
        ["tools", 0, "endpoint", "url"],
        ["tools", 0, "input_schema"],
        ["tools", 1, "name"],
        ["version"],
    ]


def test_issues_say_what_is_wrong_in_words() -> None:
    document = _document(name="Weather", version="1.0")
    document["tools"][0]["endpoint"]["url"] = "ftp://example.com"
    document["tools"][0]["input_schema"] = {"type": "objekt"}

    messages = dict((tuple(path), message) for path, message in _issues(_raw(document)))

    assert "lowercase" in messages[("name",)]
    assert "semantic version" in messages[("version",)]
    assert "http:// or https://" in messages[("tools", 0, "endpoint", "url")]
    assert "not a valid JSON Schema" in messages[("tools", 0, "input_schema")]


def test_too_many_tools_says_how_many_are_allowed() -> None:
    tools = [_tool(f"t{i}") for i in range(65)]

    assert _issues(_raw(_document(tools=tools))) == [(["tools"], "must have at most 64 items")]


def test_a_long_offending_value_is_not_repeated_whole_in_its_message() -> None:
    (issue,) = _issues(_raw(_document(description="d" * 100_000)))

    assert issue == (["description"], "must be at most 2000 characters long")


def test_a_long_value_of_any_other_rule_is_cut_in_its_message() -> None:
    requires = {"entitlements": ["g" * 1000]}

    (issue,) = _issues(_raw(_document(requires=requires)))

    assert issue[0] == ["requires", "entitlements", 0]
    assert len(issue[1]) <= 300 and issue[1].endswith("…")


def test_a_long_value_is_quoted_short_before_what_is_wrong_with_it() -> None:
    (issue,) = _issues(_raw(_document(version="x" * 100)))

    assert issue[0] == ["version"]
    assert issue[1].endswith("is not a semantic version (SemVer 2.0.0, such as 1.2.3)")
    assert len(issue[1]) < 150


def test_the_refusal_carries_the_issues_for_the_error_body() -> None:
    with pytest.raises(ManifestInvalid) as refused:
        parse(_raw(_document(version="1")))

    assert refused.value.details["issues"] == [
        {"path": ["version"], "message": refused.value.issues[0].message}
    ]
    assert "version" in str(refused.value)


def test_a_file_over_256_kib_is_too_large() -> None:
    raw = _raw(_document()) + b" " * (257 * 1024)

    with pytest.raises(TooLarge) as refused:
        parse(raw)

    assert refused.value.code == "too_large"
    assert refused.value.size == len(raw)


def test_a_file_of_exactly_256_kib_is_read() -> None:
    raw = _raw(_document())

    assert parse(raw + b" " * (MAX_BYTES - len(raw))).name == "weather-demo"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "not JSON"),
        (b"name: weather-demo\nversion: 1.0.0\n", "not JSON"),
        (b'{"name": "weather-demo",}', "not JSON"),
        (b'{"name": "caf\xe9"}', "not UTF-8"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b'{"name": "a", "name": "b"}', "appears twice"),
        (b'{"version": NaN}', "NaN"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"[" * 65 + b"]" * 65, "nested deeper"),
    ],
    ids=[
        "empty",
        "yaml",
        "trailing comma",
        "latin-1",
        "utf-16",
        "duplicate key",
        "NaN",
        "deep nesting",
        "65 levels",
    ],
)
def test_what_is_not_a_json_document_is_refused_at_the_root_with_why(
    raw: bytes, words: str
) -> None:
    (issue,) = _issues(raw)

    assert issue[0] == []
    assert words in issue[1]


def test_an_unpaired_surrogate_escape_is_refused_where_it_is() -> None:
    raw = _raw(_document(description="PLACEHOLDER")).replace(b"PLACEHOLDER", b"rain \\ud83d")

    (issue,) = _issues(raw)

    assert issue[0] == ["description"]
    assert "surrogate" in issue[1]


def test_an_unpaired_surrogate_escape_in_a_key_is_refused_at_its_object() -> None:
    document = _document()
    document["tools"][0]["input_schema"]["properties"] = {"PLACEHOLDER": {"type": "string"}}
    raw = _raw(document).replace(b"PLACEHOLDER", b"\\udc00")

    (issue,) = _issues(raw)

    assert issue[0] == ["tools", 0, "input_schema", "properties"]
    assert "surrogate" in issue[1]


def test_a_paired_surrogate_escape_is_the_character_it_encodes() -> None:
    raw = _raw(_document(description="PLACEHOLDER")).replace(b"PLACEHOLDER", b"\\ud83c\\udf27")

    manifest = parse(raw)

    assert manifest.description == "\N{CLOUD WITH RAIN}"
    assert manifest_hash(manifest).startswith("sha256:")


def test_64_levels_of_nesting_are_read() -> None:
    document = _document()
    nested: Any = "deep"
    for _ in range(64 - 5):  # the schema's own path is 5 levels: tools/0/input_schema/x
        nested = [nested]
    document["tools"][0]["input_schema"]["x"] = nested

    assert parse(_raw(document)).name == "weather-demo"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(
        resources.files("nome_core.marketplace").joinpath("nome-package.schema.json").read_text()
    )

    Draft202012Validator.check_schema(schema)


def test_the_schema_lists_the_same_entitlements_and_connectors_as_the_code() -> None:
    schema = json.loads(
        resources.files("nome_core.marketplace").joinpath("nome-package.schema.json").read_text()
    )
    requires = schema["properties"]["requires"]["properties"]

    assert requires["entitlements"]["items"]["enum"] == list(ENTITLEMENTS)
    assert requires["connectors"]["items"]["enum"] == list(CONNECTORS)


def test_a_manifest_survives_the_event_encoding_with_its_hash() -> None:
    manifest = parse(_raw(_document()))

    again = msgspec.json.decode(msgspec.json.encode(manifest), type=Manifest)

    assert again == manifest
    assert manifest_hash(again) == manifest_hash(manifest)


def test_leaving_out_an_optional_field_or_writing_its_default_is_one_content() -> None:
    absent = _document()
    del absent["requires"]

    empty = _document(requires={})
    empty_lists = _document(requires={"entitlements": [], "connectors": []})

    hashes = {manifest_hash(parse(_raw(d))) for d in (absent, empty, empty_lists)}
    assert len(hashes) == 1


def test_the_manifest_hash_ignores_formatting_and_key_order() -> None:
    document = _document()
    reordered = dict(reversed(list(document.items())))

    pretty = json.dumps(reordered, indent=4).encode()

    assert manifest_hash(parse(pretty)) == manifest_hash(parse(_raw(document)))


@pytest.mark.parametrize(
    "change",
    [
        _set(["description"], "Other weather tools."),
        _set(["publisher"], "Someone else"),
        _set(["homepage"], "https://example.org"),
        _set(["tools", 0, "endpoint", "url"], "https://tools.example.com/v2"),
        _set(["tools", 1, "dangerous"], False),
        _set(["requires", "connectors"], ["slack", "github"]),
    ],
)
def test_other_content_of_the_same_version_has_another_manifest_hash(
    change: Callable[[dict[str, Any]], None],
) -> None:
    document = _document()
    changed = copy.deepcopy(document)
    change(changed)

    assert manifest_hash(parse(_raw(changed))) != manifest_hash(parse(_raw(document)))


def test_hashes_are_sha256_prefixed_hex() -> None:
    manifest = parse(_raw(_document()))

    for value in (manifest_hash(manifest), tool_hash(manifest.tools[0])):
        prefix, _, digest = value.partition(":")
        assert prefix == "sha256"
        assert len(digest) == 64 and int(digest, 16) >= 0


# -- tool_hash, by property ----------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_schemas = st.dictionaries(st.text(max_size=8), _json, max_size=6)
_tools = st.builds(
    ToolSpec,
    name=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    description=st.text(min_size=1, max_size=50),
    input_schema=_schemas,
    dangerous=st.booleans(),
    endpoint=st.just(Endpoint(type="http", url="https://tools.example.com")),
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value, every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(tool=_tools, rng=st.randoms(use_true_random=False))
def test_tool_hash_does_not_depend_on_the_key_order_of_the_input_schema(
    tool: ToolSpec, rng: random.Random
) -> None:
    shuffled = msgspec.structs.replace(tool, input_schema=_shuffled(tool.input_schema, rng))

    assert tool_hash(shuffled) == tool_hash(tool)


@given(
    tool=_tools,
    other=_tools,
    field=st.sampled_from(["name", "description", "input_schema", "dangerous"]),
)
def test_tool_hash_changes_when_any_of_its_four_fields_changes(
    tool: ToolSpec, other: ToolSpec, field: str
) -> None:
    assume(getattr(tool, field) != getattr(other, field))

    changed = msgspec.structs.replace(tool, **{field: getattr(other, field)})

    assert tool_hash(changed) != tool_hash(tool)


def test_tool_hash_does_not_cover_where_the_tool_is_served() -> None:
    tool = parse(_raw(_document())).tools[0]
    moved = msgspec.structs.replace(tool, endpoint=Endpoint(type="mcp", url="https://m.example"))

    assert tool_hash(moved) == tool_hash(tool)
