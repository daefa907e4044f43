"""NOME's MCP server (API.md §11) driven by the official `mcp` client over Streamable HTTP,
against real `nome serve --role ...` processes sharing one Postgres and one Redis: two API
processes (A and B), a projector and a worker.

The client connects in its default mode, as an application would: it probes the newer
protocol's `server/discover` (NOME answers -32601) and falls back to `initialize`. A session
opened on A goes on on B, and one opened on a process goes on after that process is replaced,
because sessions live in Redis; the transport below sends each request to whichever process
the test names at the time, as a load balancer would.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
import redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, METHOD_NOT_FOUND

from tests.support.env import REDIS_URL
from tests.support.processes import ROOT, Cluster, NomeProcess, cluster

pytestmark = pytest.mark.slow

ALLOWED_ORIGIN = "https://console.example.com"
BUILTIN = {"clock.now", "http.fetch", "math.evaluate", "thread.note"}


class Target(http.server.ThreadingHTTPServer):
    """What `http.fetch` reaches: it counts the requests it answers."""

    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, Target)
        self.server.hits.append(self.path)
        body = b"fetched"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Nodes:
    cluster: Cluster
    a: NomeProcess
    b: NomeProcess
    target: Target

    @property
    def admin(self) -> str:
        return self.cluster.admin_key

    async def key(self, *roles: str) -> str:
        """A new key of the default tenant with these roles."""
        made = await rest(
            "POST", self.a, self.admin, "/v1/admin/keys", {"name": "k", "roles": list(roles)}
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    def other_tenant_key(self) -> str:
        """An admin key of another tenant, made by `nome keys create` as an operator would."""
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "nome_api.cli",
                *("keys", "create", "--tenant", "other"),
                *("--role", "admin"),
            ],
            cwd=ROOT,
            env=self.cluster.environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    target = Target(("127.0.0.1", 0), _Handler)
    target.hits = []
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        with cluster(
            tmp_path_factory.mktemp("mcp"),
            NOME_FETCH_ALLOW_HOSTS="127.0.0.1",
            NOME_ALLOWED_ORIGINS=ALLOWED_ORIGIN,
        ) as processes:
            # A alone first: it creates the bootstrap tenant; the others then find it.
            a = processes.start("api-a", "api")
            b, _, _ = processes.start_many(
                ("api-b", ("api",)), ("projector", ("projector",)), ("worker", ("worker",))
            )
            processes.wait_for_key(a)
            processes.wait_for_key(b)
            yield Nodes(processes, a, b, target)
    finally:
        target.shutdown()
        target.server_close()


class Route(httpx2.AsyncBaseTransport):
    """Sends each request to the API process `to` names when it is sent, and keeps the
    session ids the server hands out."""

    def __init__(self, to: NomeProcess) -> None:
        self.to = to
        self.sessions: list[str] = []
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=self.to.port)
        response = await self._inner.handle_async_request(request)
        if session := response.headers.get("mcp-session-id"):
            self.sessions.append(session)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def connected(route: Route, key: str) -> AsyncIterator[Client]:
    """The official client, connected in its default mode, with a NOME key."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, transport=route, timeout=30
    )
    async with http, Client(streamable_http_client(route.to.url + "/mcp", http_client=http)) as c:
        yield c


async def rest(
    method: str, process: NomeProcess, key: str, path: str, body: Any = None, **headers: str
) -> httpx.Response:
    """One request of NOME's HTTP API."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method,
            process.url + path,
            json=body,
            headers={"Authorization": f"Bearer {key}", **_named(headers)},
        )


def _named(headers: dict[str, str]) -> dict[str, str]:
    """Header names as keyword arguments spell them (`Mcp_Session_Id`)."""
    return {name.replace("_", "-"): value for name, value in headers.items()}


def hello(version: str) -> dict[str, Any]:
    """initialize's params."""
    return {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }


async def rpc(
    process: NomeProcess,
    key: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    session: str | None = None,
    **headers: str,
) -> httpx.Response:
    """One JSON-RPC request by hand, for what the official client never sends."""
    sent = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    if session is not None:
        sent["Mcp-Session-Id"] = session
    sent.update(_named(headers))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        message["params"] = params
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(process.url + "/mcp", json=message, headers=sent)


async def initialized(process: NomeProcess, key: str, version: str = "2025-11-25") -> str:
    response = await rpc(
        process,
        key,
        "initialize",
        {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def fetched(nodes: Nodes, path: str) -> int:
    return nodes.target.hits.count(path)


# -- the official client -------------------------------------------------------------------


async def test_the_official_client_lists_the_tenants_tools_and_calls_one_with_a_receipt(
    nodes: Nodes,
) -> None:
    async with connected(Route(nodes.a), nodes.admin) as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None and client.server_info.name == "nome"
        listed = await client.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert set(tools) == BUILTIN
        fetch, math = tools["http.fetch"], tools["math.evaluate"]
        assert fetch.annotations is not None and fetch.annotations.destructive_hint is True
        assert math.annotations is not None and math.annotations.destructive_hint is False
        assert math.input_schema["required"] == ["expression"]
        assert fetch.meta is not None and fetch.meta["nome_policy"]["approval"] == "required"

        result = await client.call_tool("math.evaluate", {"expression": "6*7"})
        assert result.is_error is False
        receipt = result.structured_content
        assert receipt is not None and receipt["status"] == "ok"
        assert receipt["result"] == {"value": 42} and receipt["run_id"] is None

        bad = await client.call_tool("math.evaluate", {"expr": "6*7"})
        assert bad.is_error is True and "`expr`" in bad.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no.such.tool", {})
        assert unknown.value.code == INVALID_PARAMS

    # The receipt is NOME's, like any other: there to read over HTTP.
    stored = await rest("GET", nodes.b, nodes.admin, f"/v1/receipts/{receipt['id']}")
    assert stored.status_code == 200 and stored.json()["result"] == {"value": 42}


async def test_a_key_is_offered_only_the_tools_its_roles_may_call(nodes: Nodes) -> None:
    # clock.now for admins only: a member no longer sees it, and calling it anyway is
    # denied by the policy with a receipt saying so.
    policy = await rest(
        "PUT", nodes.a, nodes.admin, "/v1/tools/policies/clock.now", {"allowed_roles": ["admin"]}
    )
    assert policy.status_code == 200, policy.text
    member, viewer = await nodes.key("member"), await nodes.key("viewer")

    async with connected(Route(nodes.a), member) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == BUILTIN - {"clock.now"}
        denied = await client.call_tool("clock.now", {})
        assert denied.is_error is True
        assert denied.structured_content is not None
        assert denied.structured_content["status"] == "denied"

    async with connected(Route(nodes.a), nodes.admin) as client:
        assert "clock.now" in {tool.name for tool in (await client.list_tools()).tools}

    # A viewer may make no direct call (POST /v1/tools/call needs member): no tool is
    # offered, and a call is refused without running.
    async with connected(Route(nodes.b), viewer) as client:
        assert (await client.list_tools()).tools == []
        refused = await client.call_tool("math.evaluate", {"expression": "1+1"})
        assert refused.is_error is True and refused.structured_content is None
        assert "member" in refused.content[0].text  # type: ignore[union-attr]


async def test_a_dangerous_call_waits_for_its_approval_then_answers_its_receipt_and_ran_once(
    nodes: Nodes,
) -> None:
    path = "/approved-once"
    arguments = {"url": f"http://127.0.0.1:{nodes.target.server_port}{path}"}
    async with connected(Route(nodes.a), nodes.admin) as client:
        pending = await client.call_tool("http.fetch", arguments)
        assert pending.is_error is True
        assert pending.structured_content is not None
        approval_id = pending.structured_content["approval_id"]
        assert approval_id in pending.content[0].text  # type: ignore[union-attr]
        assert fetched(nodes, path) == 0

        # Asked again before anyone answers: still waiting.
        meta = {"nome_approval_id": approval_id}
        waiting = await client.call_tool("http.fetch", arguments, meta=meta)
        assert waiting.is_error is True
        assert waiting.structured_content == {"approval_id": approval_id}

        # A person approves it (on the other process): the call runs there, once.
        approved = await rest("POST", nodes.b, nodes.admin, f"/v1/approvals/{approval_id}/approve")
        assert approved.status_code == 200, approved.text
        receipt = approved.json()["receipt"]
        assert receipt["status"] == "ok" and fetched(nodes, path) == 1

        # The client asks with the approval id, as the pending answer said: the approved
        # call's receipt, however often it asks, and the URL was fetched once.
        for _ in range(2):
            answered = await client.call_tool("http.fetch", arguments, meta=meta)
            assert answered.is_error is False
            assert answered.structured_content is not None
            assert answered.structured_content["id"] == receipt["id"]
            assert answered.structured_content["approval_id"] == approval_id
            assert answered.structured_content["result"]["body"] == "fetched"
        assert fetched(nodes, path) == 1

        # The approval names one call: not another URL.
        other = {"url": arguments["url"] + "?again"}
        with pytest.raises(MCPError) as refused:
            await client.call_tool("http.fetch", other, meta=meta)
        assert refused.value.code == INVALID_PARAMS
    assert fetched(nodes, path) == 1


async def test_a_denied_call_answers_its_denial_and_never_runs(nodes: Nodes) -> None:
    path = "/denied"
    arguments = {"url": f"http://127.0.0.1:{nodes.target.server_port}{path}"}
    async with connected(Route(nodes.b), nodes.admin) as client:
        pending = await client.call_tool("http.fetch", arguments)
        assert pending.structured_content is not None
        approval_id = pending.structured_content["approval_id"]
        denied = await rest(
            "POST", nodes.a, nodes.admin, f"/v1/approvals/{approval_id}/deny", {"reason": "no"}
        )
        assert denied.status_code == 200, denied.text
        answer = await client.call_tool(
            "http.fetch", arguments, meta={"nome_approval_id": approval_id}
        )
        assert answer.is_error is True
        assert answer.structured_content is not None
        assert answer.structured_content["status"] == "denied"
    assert fetched(nodes, path) == 0


async def test_a_call_names_its_thread_in_meta(nodes: Nodes) -> None:
    thread = await rest("POST", nodes.a, nodes.admin, "/v1/threads", {"title": "notes"})
    assert thread.status_code == 201, thread.text
    async with connected(Route(nodes.a), nodes.admin) as client:
        unthreaded = await client.call_tool("thread.note", {"text": "hello"})
        assert unthreaded.is_error is True and unthreaded.structured_content is None
        meta = {"nome_thread_id": thread.json()["id"]}
        noted = await client.call_tool("thread.note", {"text": "hello"}, meta=meta)
        assert noted.is_error is False
        assert noted.structured_content is not None
        assert "note_id" in noted.structured_content["result"]


async def test_a_session_opened_on_one_api_process_goes_on_on_another(nodes: Nodes) -> None:
    route = Route(nodes.a)
    async with connected(route, nodes.admin) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == BUILTIN
        route.to = nodes.b
        result = await client.call_tool("math.evaluate", {"expression": "2**10"})
        assert result.structured_content is not None
        assert result.structured_content["result"] == {"value": 1024}
        await client.session.send_ping()
    assert len(set(route.sessions)) == 1


async def test_a_session_survives_the_restart_of_the_process_that_opened_it(
    nodes: Nodes,
) -> None:
    first = nodes.cluster.start("api-c", "api")
    route = Route(first)
    store = redis.Redis.from_url(REDIS_URL)
    try:
        async with connected(route, nodes.admin) as client:
            await client.list_tools()
            first.kill()
            route.to = nodes.cluster.start("api-c-again", "api")
            result = await client.call_tool("math.evaluate", {"expression": "1+2"})
            assert result.structured_content is not None
            assert result.structured_content["result"] == {"value": 3}
            # Kept in Redis, under the deployment's prefix, for 24 hours from its last use.
            kept = list(store.scan_iter(match=f"{nodes.cluster.prefix}mcp-session:*"))
            assert kept and all(24 * 3600 - 300 < store.ttl(k) <= 24 * 3600 for k in kept)
    finally:
        store.close()
    # The client's close (DELETE /mcp) ended it.
    (session,) = set(route.sessions)
    assert (await rpc(nodes.b, nodes.admin, "ping", session=session)).status_code == 404


# -- the transport's rules, by hand --------------------------------------------------------


async def test_a_method_nome_does_not_serve_is_method_not_found_with_or_without_a_session(
    nodes: Nodes,
) -> None:
    discover = await rpc(nodes.a, nodes.admin, "server/discover", {})
    assert discover.status_code == 200
    assert discover.json() == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": METHOD_NOT_FOUND, "message": "method not found: server/discover"},
    }
    session = await initialized(nodes.a, nodes.admin)
    for method in ("server/discover", "resources/list", "prompts/list"):
        answer = await rpc(nodes.b, nodes.admin, method, {}, session=session)
        assert answer.status_code == 200
        assert answer.json()["error"]["code"] == METHOD_NOT_FOUND
    # Every other message needs the session.
    missing = await rpc(nodes.a, nodes.admin, "tools/list")
    assert missing.status_code == 400 and missing.json()["code"] == "bad_request"


async def test_initialize_agrees_on_a_revision_nome_speaks(nodes: Nodes) -> None:
    for asked, agreed in [
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2024-11-05", "2025-11-25"),
    ]:
        answer = await rpc(
            nodes.a,
            nodes.admin,
            "initialize",
            {
                "protocolVersion": asked,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        assert answer.json()["result"]["protocolVersion"] == agreed, asked
        assert answer.json()["result"]["capabilities"] == {"tools": {"listChanged": False}}
    broken = await rpc(nodes.a, nodes.admin, "initialize", {"capabilities": {}})
    assert broken.status_code == 200 and broken.json()["error"]["code"] == INVALID_PARAMS
    assert "mcp-session-id" not in broken.headers


async def test_a_bad_protocol_version_header_is_400(nodes: Nodes) -> None:
    session = await initialized(nodes.a, nodes.admin, "2025-06-18")
    right = await rpc(
        nodes.a, nodes.admin, "ping", session=session, MCP_Protocol_Version="2025-06-18"
    )
    assert right.status_code == 200 and right.json()["result"] == {}
    for version in ("banana", "1999-01-01", "2025-11-25"):
        wrong = await rpc(
            nodes.a, nodes.admin, "ping", session=session, MCP_Protocol_Version=version
        )
        assert wrong.status_code == 400, version
        assert wrong.json()["code"] == "bad_request"


async def test_a_foreign_origin_is_403_and_an_allowed_one_is_served(nodes: Nodes) -> None:
    session = await initialized(nodes.a, nodes.admin)
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
        refused = await rpc(nodes.a, nodes.admin, "ping", session=session, Origin=origin)
        assert refused.status_code == 403, origin
        assert refused.json()["code"] == "forbidden"
    allowed = await rpc(nodes.a, nodes.admin, "ping", session=session, Origin=ALLOWED_ORIGIN)
    assert allowed.status_code == 200


async def test_a_session_is_its_keys_alone_and_delete_ends_it(nodes: Nodes) -> None:
    session = await initialized(nodes.a, nodes.admin)
    other = nodes.other_tenant_key()
    for key in (other, await nodes.key("member")):
        foreign = await rpc(nodes.b, key, "tools/list", session=session)
        assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
        not_theirs = await rest("DELETE", nodes.b, key, "/mcp", Mcp_Session_Id=session)
        assert not_theirs.status_code == 404
    # Still the owner's, until the owner ends it.
    assert (await rpc(nodes.a, nodes.admin, "ping", session=session)).status_code == 200
    ended = await rest("DELETE", nodes.b, nodes.admin, "/mcp", Mcp_Session_Id=session)
    assert ended.status_code == 204
    assert (await rpc(nodes.a, nodes.admin, "ping", session=session)).status_code == 404


async def test_notifications_are_accepted_and_a_client_taking_only_sse_gets_one_event(
    nodes: Nodes,
) -> None:
    session = await initialized(nodes.a, nodes.admin)
    async with httpx.AsyncClient(timeout=30) as http:
        note = await http.post(
            nodes.a.url + "/mcp",
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={"Authorization": f"Bearer {nodes.admin}", "Mcp-Session-Id": session},
        )
        assert note.status_code == 202 and note.content == b""
        unauthenticated = await http.post(
            nodes.a.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
        )
        assert unauthenticated.status_code == 401
    streamed = await rpc(nodes.a, nodes.admin, "ping", session=session, Accept="text/event-stream")
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text == 'event: message\ndata: {"jsonrpc":"2.0","id":7,"result":{}}\n\n'
