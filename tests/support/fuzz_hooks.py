"""Schemathesis extensions for tests/api/test_openapi_fuzz.py, loaded by its CLI run (the
`hooks` entry of the run's config file)."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import schemathesis

# The run's own key: revoking it would turn every later request into a 401.
SPARE_KEY_ID = os.environ.get("NOME_FUZZ_SPARE_KEY_ID", "")
NO_SUCH_KEY = "00000000-0000-4000-8000-000000000000"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Two requests the contract answers in ways that would stall the run: a revocation of
    the key it runs with (every later request would be a 401), which goes to no key instead;
    and a read of a position the log has not reached (a 503 after 5 s), which asks for
    position 0 instead, while malformed positions still go out as generated."""
    revoke = case.operation.label == "DELETE /v1/admin/keys/{key_id}"
    if revoke and case.path_parameters.get("key_id") == SPARE_KEY_ID:
        case.path_parameters["key_id"] = NO_SUCH_KEY
    for name, value in list((case.headers or {}).items()):
        if name.lower() == "x-nome-min-position" and str(value).isdigit():
            case.headers[name] = "0"


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx: Any, response: Any) -> list[Any]:
    """An NDJSON answer as the list of its lines' JSON values (each line must be one)."""
    return [msgspec.json.decode(line) for line in response.content.splitlines() if line]
