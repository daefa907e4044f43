"""Package tools against real servers: the `http` executor against the weather example's
tool server (which verifies Standard Webhooks signatures) and a stub for odd answers, the
`mcp` executor against the notes-mcp example built on the official MCP SDK."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import pytest
from standardwebhooks import Webhook

from nome_api.executors.http import MAX_ANSWER, call_http
from nome_api.executors.mcp import McpTool, call_tool, list_tools
from nome_core.marketplace.manifest import ToolSpec, parse, tool_hash
from nome_core.tools.executor import BackendUnreachable, ToolFailed
from tests.support.examples import PACKAGES as EXAMPLES
from tests.support.examples import example_server

LOOPBACK = frozenset({"127.0.0.1"})


weather = example_server("weather")
notes = example_server("notes-mcp")


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call_id() -> str:
    return "call_" + secrets.token_hex(8)


def _only_this_task_runs() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# --- http -----------------------------------------------------------------------------------

SECRET = _secret()


@pytest.fixture(scope="module")
def weather_url() -> Iterator[str]:
    server, thread = weather.serve(0, SECRET)
    yield f"http://127.0.0.1:{server.server_port}/tools"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class _Stub(ThreadingHTTPServer):
    """Answers POST /<path> oddly, and remembers each request it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []


class _StubHandler(BaseHTTPRequestHandler):
    server: _Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.path, dict(self.headers.items()), body))
        match self.path:
            case "/echo":
                self._send(200, "application/json", body)
            case "/slow":
                time.sleep(2)
                self._send(200, "application/json", b"{}")
            case "/broken":
                self._send(500, "text/plain", b"Internal Server Error: " + b"x" * 1000)
            case "/text":
                self._send(200, "text/plain", b"all good")
            case "/huge":
                self._send(200, "application/json", b'"' + b"x" * (MAX_ANSWER + 10) + b'"')
            case "/moved":
                self.send_response(302)
                self.send_header("Location", "/echo")
                self.send_header("Content-Length", "0")
                self.end_headers()

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def stub() -> Iterator[_Stub]:
    server = _Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _stub_url(stub: _Stub, path: str) -> str:
    return f"http://127.0.0.1:{stub.server_port}{path}"


async def _http(
    url: str,
    *,
    tool: str = "forecast",
    arguments: dict[str, Any] | None = None,
    call_id: str | None = None,
    secret: str = SECRET,
    timeout_s: float = 5.0,
    allow_hosts: frozenset[str] = LOOPBACK,
    client: httpx.AsyncClient | None = None,
) -> Any:
    return await call_http(
        url,
        tool=tool,
        arguments={"city": "Lisbon"} if arguments is None else arguments,
        call_id=call_id or _call_id(),
        run_id="run_1",
        tenant_id="tenant_1",
        secret=secret,
        timeout_s=timeout_s,
        allow_hosts=allow_hosts,
        client=client,
    )


async def test_a_signed_call_returns_the_tools_json_answer(weather_url: str) -> None:
    result = await _http(weather_url)

    assert result == {"city": "Lisbon", "forecast": "sunny", "high_c": 21}


async def test_a_retry_of_one_call_is_answered_once_by_the_tool_server(weather_url: str) -> None:
    call_id = _call_id()
    arguments = {"city": "Lisbon", "message": "Storm"}

    first = await _http(weather_url, tool="alert", arguments=arguments, call_id=call_id)
    again = await _http(weather_url, tool="alert", arguments=arguments, call_id=call_id)

    assert first == again == {"sent": True}


async def test_the_call_is_compact_json_signed_for_its_call_id(stub: _Stub) -> None:
    call_id = _call_id()

    result = await _http(_stub_url(stub, "/echo"), call_id=call_id)

    _, headers, body = next(r for r in stub.requests if r[1].get("Idempotency-Key") == call_id)
    assert result == {
        "tool": "forecast",
        "arguments": {"city": "Lisbon"},
        "call_id": call_id,
        "run_id": "run_1",
        "tenant_id": "tenant_1",
    }
    assert body == msgspec.json.encode(result)  # compact: the bytes that were signed
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == call_id
    Webhook(SECRET).verify(body, headers, json_parse=False)  # raises if it does not verify


async def test_a_call_signed_with_another_secret_fails_with_the_servers_401(
    weather_url: str,
) -> None:
    wrong = _secret()

    with pytest.raises(ToolFailed) as failed:
        await _http(weather_url, secret=wrong)

    assert not isinstance(failed.value, BackendUnreachable)
    assert "401" in str(failed.value)
    assert wrong not in str(failed.value) and SECRET not in str(failed.value)


async def test_a_closed_port_is_an_unreachable_backend() -> None:
    with pytest.raises(BackendUnreachable, match="unreachable"):
        await _http(f"http://127.0.0.1:{_closed_port()}/tools")


async def test_loopback_outside_the_allowed_hosts_is_refused_before_any_request(
    stub: _Stub,
) -> None:
    before = len(stub.requests)

    with pytest.raises(ToolFailed, match="non-public address") as failed:
        await _http(_stub_url(stub, "/echo"), allow_hosts=frozenset())

    assert not isinstance(failed.value, BackendUnreachable)
    assert len(stub.requests) == before


async def test_a_tool_that_answers_too_late_fails(stub: _Stub) -> None:
    with pytest.raises(ToolFailed, match=r"did not answer within 0\.5 s") as failed:
        await _http(_stub_url(stub, "/slow"), timeout_s=0.5)

    assert not isinstance(failed.value, BackendUnreachable)


async def test_a_500_fails_with_the_status_and_the_start_of_the_body(stub: _Stub) -> None:
    with pytest.raises(ToolFailed) as failed:
        await _http(_stub_url(stub, "/broken"))

    message = str(failed.value)
    assert message.startswith("the tool answered 500: Internal Server Error: xxx")
    assert len(message) == len("the tool answered 500: ") + 200


async def test_a_2xx_that_is_not_json_fails(stub: _Stub) -> None:
    with pytest.raises(ToolFailed, match="not JSON"):
        await _http(_stub_url(stub, "/text"))


async def test_an_answer_over_one_mebibyte_fails(stub: _Stub) -> None:
    with pytest.raises(ToolFailed, match="larger than"):
        await _http(_stub_url(stub, "/huge"))


async def test_a_redirect_is_not_followed_even_by_a_client_that_follows_them(
    stub: _Stub,
) -> None:
    async with httpx.AsyncClient(follow_redirects=True) as client:
        with pytest.raises(ToolFailed, match="answered 302"):
            await _http(_stub_url(stub, "/moved"), client=client)


# --- mcp ------------------------------------------------------------------------------------

NOTES_MANIFEST = parse((EXAMPLES / "notes-mcp" / "nome-package.json").read_bytes())


@pytest.fixture(scope="module")
def notes_url() -> Iterator[str]:
    running = notes.serve(0)
    yield running.url
    running.stop()


def test_the_notes_manifest_passes_the_importers_checks() -> None:
    assert (NOTES_MANIFEST.name, NOTES_MANIFEST.version) == ("notes-mcp", "1.0.0")
    assert [tool.name for tool in NOTES_MANIFEST.tools] == ["add_note", "count_notes"]
    assert {tool.endpoint.type for tool in NOTES_MANIFEST.tools} == {"mcp"}


async def test_list_tools_gives_every_tool_with_its_schema(notes_url: str) -> None:
    tools = {
        tool.name: tool for tool in await list_tools(notes_url, timeout_s=5, allow_hosts=LOOPBACK)
    }

    assert set(tools) == {"add_note", "count_notes", "fail"}
    assert tools["add_note"].input_schema["type"] == "object"
    assert tools["add_note"].input_schema["required"] == ["text"]
    assert tools["add_note"].input_schema["properties"]["text"]["type"] == "string"


async def test_the_manifests_tools_hash_the_same_as_the_servers(notes_url: str) -> None:
    listed = {
        tool.name: tool for tool in await list_tools(notes_url, timeout_s=5, allow_hosts=LOOPBACK)
    }

    for pinned in NOTES_MANIFEST.tools:
        served: McpTool = listed[pinned.endpoint.tool or pinned.name]
        as_served = ToolSpec(
            name=pinned.name,
            description=served.description,
            input_schema=served.input_schema,
            dangerous=pinned.dangerous,
            endpoint=pinned.endpoint,
        )
        assert tool_hash(as_served) == tool_hash(pinned), pinned.name


async def test_an_added_note_is_returned_and_counted(notes_url: str) -> None:
    async def count() -> int:
        result = await call_tool(notes_url, "count_notes", {}, timeout_s=5, allow_hosts=LOOPBACK)
        return int(result["count"])

    before = await count()
    note = await call_tool(
        notes_url, "add_note", {"text": "buy milk"}, timeout_s=5, allow_hosts=LOOPBACK
    )

    assert note == {"id": before + 1, "text": "buy milk"}
    assert await count() == before + 1


async def test_an_error_result_fails_the_call_with_its_text(notes_url: str) -> None:
    with pytest.raises(ToolFailed, match="this tool always fails") as failed:
        await call_tool(notes_url, "fail", {}, timeout_s=5, allow_hosts=LOOPBACK)

    assert not isinstance(failed.value, BackendUnreachable)


async def test_a_closed_port_is_an_unreachable_mcp_server_and_leaves_nothing_running() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/mcp"

    with pytest.raises(BackendUnreachable, match="unreachable"):
        await call_tool(url, "count_notes", {}, timeout_s=5, allow_hosts=LOOPBACK)
    with pytest.raises(BackendUnreachable):
        await list_tools(url, timeout_s=5, allow_hosts=LOOPBACK)

    assert _only_this_task_runs()


async def test_an_mcp_server_outside_the_allowed_hosts_is_refused(notes_url: str) -> None:
    with pytest.raises(ToolFailed, match="non-public address") as failed:
        await call_tool(notes_url, "count_notes", {}, timeout_s=5, allow_hosts=frozenset())

    assert not isinstance(failed.value, BackendUnreachable)


async def test_an_mcp_server_that_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"

        started = time.monotonic()
        with pytest.raises(ToolFailed, match=r"did not answer within 0\.5 s") as failed:
            await call_tool(url, "count_notes", {}, timeout_s=0.5, allow_hosts=LOOPBACK)

    assert not isinstance(failed.value, BackendUnreachable)
    assert time.monotonic() - started < 3
    assert _only_this_task_runs()
