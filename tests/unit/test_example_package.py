"""The example package examples/packages/weather: its manifest imports, and its tool server
takes only calls signed with the install's secret and answers a retry without acting twice."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from nome_core.marketplace.manifest import parse
from tests.support.examples import PACKAGES, example_server

PACKAGE = PACKAGES / "weather"


server_module = example_server("weather")


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


SECRET = _secret()


# One server for the module (stopping one takes its poll interval); each test uses keys of
# its own, so none sees another's remembered answers.
@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server, thread = server_module.serve(0, SECRET)
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _key() -> str:
    return "call_" + secrets.token_hex(8)


def _call(tool: str, arguments: dict[str, Any], call_id: str = "call_1") -> bytes:
    body = {
        "tool": tool,
        "arguments": arguments,
        "call_id": call_id,
        "run_id": "run_1",
        "tenant_id": "tenant_1",
    }
    return json.dumps(body).encode()


def _signed(body: bytes, *, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    """Headers as NOME sends them: a fresh webhook id for every attempt, even a retry."""
    msg_id = "msg_" + secrets.token_hex(8)
    timestamp = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body.decode()),
        "Content-Type": "application/json",
    }


def _post(port: int, body: bytes, headers: dict[str, str], path: str = "/tools") -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_manifest_passes_the_importers_checks() -> None:
    manifest = parse((PACKAGE / "nome-package.json").read_bytes())

    assert (manifest.name, manifest.version) == ("weather-demo", "1.0.0")
    tools = {tool.name: tool for tool in manifest.tools}
    assert set(tools) == {"forecast", "alert"}
    assert not tools["forecast"].dangerous and tools["alert"].dangerous
    assert {tool.endpoint.type for tool in manifest.tools} == {"http"}
    assert {tool.endpoint.url for tool in manifest.tools} == {"http://127.0.0.1:8765/tools"}
    assert tools["forecast"].input_schema["required"] == ["city"]
    assert tools["alert"].input_schema["required"] == ["city", "message"]


def test_the_manifest_names_only_tools_the_server_has() -> None:
    manifest = parse((PACKAGE / "nome-package.json").read_bytes())

    assert {tool.name for tool in manifest.tools} == set(server_module.TOOLS)


def test_a_signed_call_gets_the_tools_result(port: int) -> None:
    body = _call("forecast", {"city": "Lisbon"})

    status, result = _post(port, body, _signed(body))

    assert status == 200
    assert result == {"city": "Lisbon", "forecast": "sunny", "high_c": 21}


def test_a_signed_alert_is_sent(port: int) -> None:
    body = _call("alert", {"city": "Lisbon", "message": "Storm at 6pm"})

    assert _post(port, body, _signed(body)) == (200, {"sent": True})


def test_a_call_signed_with_another_secret_is_refused(port: int) -> None:
    body = _call("alert", {"city": "Lisbon", "message": "Storm"})

    status, answer = _post(port, body, _signed(body, secret=_secret()))

    assert status == 401
    assert answer["code"] == "bad_signature"


def test_a_call_whose_body_was_changed_after_signing_is_refused(port: int) -> None:
    headers = _signed(_call("forecast", {"city": "Lisbon"}))
    tampered = _call("alert", {"city": "Lisbon", "message": "Storm"})

    assert _post(port, tampered, headers)[0] == 401


def test_an_unsigned_call_is_refused(port: int) -> None:
    body = _call("forecast", {"city": "Lisbon"})

    assert _post(port, body, {"Content-Type": "application/json"})[0] == 401


def test_a_malformed_signature_is_refused_not_crashed_on(port: int) -> None:
    body = _call("forecast", {"city": "Lisbon"})
    headers = {**_signed(body), "webhook-signature": "garbage"}

    assert _post(port, body, headers)[0] == 401


def test_a_stale_signature_is_refused(port: int) -> None:
    body = _call("forecast", {"city": "Lisbon"})

    headers = _signed(body, at=datetime.now(UTC) - timedelta(minutes=10))

    assert _post(port, body, headers)[0] == 401


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_acts_once(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []

    def alert(arguments: dict[str, Any]) -> dict[str, Any]:
        sent.append(arguments)
        return {"sent": True, "number": len(sent)}

    monkeypatch.setitem(server_module.TOOLS, "alert", alert)
    key = _key()
    body = _call("alert", {"city": "Lisbon", "message": "Storm"}, call_id=key)

    first = _post(port, body, {**_signed(body), "Idempotency-Key": key})
    retry = _post(port, body, {**_signed(body), "Idempotency-Key": key})

    assert first == retry == (200, {"sent": True, "number": 1})
    assert len(sent) == 1


def test_another_call_with_another_key_acts_again(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []

    def alert(arguments: dict[str, Any]) -> dict[str, Any]:
        sent.append(arguments)
        return {"sent": True}

    monkeypatch.setitem(server_module.TOOLS, "alert", alert)

    for call_id in (_key(), _key()):
        body = _call("alert", {"city": "Lisbon", "message": "Storm"}, call_id=call_id)
        assert _post(port, body, {**_signed(body), "Idempotency-Key": call_id})[0] == 200

    assert len(sent) == 2


def test_a_reused_key_with_another_body_is_a_conflict(port: int) -> None:
    key = _key()
    first = _call("forecast", {"city": "Lisbon"}, call_id=key)
    other = _call("forecast", {"city": "Porto"}, call_id=key)

    assert _post(port, first, {**_signed(first), "Idempotency-Key": key})[0] == 200
    status, answer = _post(port, other, {**_signed(other), "Idempotency-Key": key})

    assert status == 409
    assert answer["code"] == "idempotency_conflict"


def test_an_unknown_tool_is_a_bad_request(port: int) -> None:
    body = _call("tornado", {})

    status, answer = _post(port, body, _signed(body))

    assert status == 400
    assert answer["code"] == "unknown_tool"


def test_missing_arguments_are_a_bad_request(port: int) -> None:
    body = _call("alert", {"city": "Lisbon"})

    status, answer = _post(port, body, _signed(body))

    assert status == 400
    assert "message" in answer["error"]


def test_tools_are_called_at_their_path_only(port: int) -> None:
    body = _call("forecast", {"city": "Lisbon"})

    assert _post(port, body, _signed(body), path="/elsewhere")[0] == 404
