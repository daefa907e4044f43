"""Tools, receipts and the policy matrix over HTTP (API.md §5): limits and roles become denied
receipts the model sees, a down backend follows the policy's `offline` rule, receipts hash
what they say they hash, and policies are validated, versioned and simulated."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from nome_api.settings import Settings
from tests.support.api import Api, auth
from tests.support.api_approvals import (
    LiveStream,
    body,
    eventually,
    get_run,
    new_thread,
    of_type,
    output_of,
    run_events,
    running,
    set_policy,
    start_run,
    wait_for_run,
)
from tests.support.errors import assert_error
from tests.support.processes import free_port
from tests.support.sse import events_only


def canonical_sha256(value: Any) -> str:
    """The hex SHA-256 of canonical JSON, computed with the standard library only."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def tool_line(tool: str, arguments: dict[str, Any]) -> str:
    return f"/tool {tool} {json.dumps(arguments, ensure_ascii=False)}"


async def receipts_of(api: Api, key: str, run_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A run's receipts from GET /v1/runs/{id}/receipts, following the cursor."""
    await api.settle()
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = body(
            await api.client.get(f"/v1/runs/{run_id}/receipts", params=params, headers=auth(key))
        )
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            assert page["total_count"] == len(found)
            return found
    raise AssertionError("the receipt pages did not end")


# -- receipts -------------------------------------------------------------------------------


async def test_receipts_hash_their_arguments_and_results_and_are_listed_in_call_order(
    api: Api,
) -> None:
    key = await api.key()
    calls = [
        ("math.evaluate", {"expression": "1+1"}),
        ("thread.note", {"text": "café, naïve, ✓ — kept as UTF-8"}),
        ("clock.now", {}),
        ("math.evaluate", {"expression": "1/0"}),
        ("math.evaluate", {"expression": "2**10"}),
    ]
    text = "\n".join([*(tool_line(t, a) for t, a in calls), "all done"])
    run = await start_run(api, key, text)
    await wait_for_run(api, key, run["id"])
    events = await run_events(api, key, run["id"])

    called = of_type(events, "tool.called")
    assert [(c["data"]["tool"], c["data"]["arguments"]) for c in called] == calls
    by_call = {
        c["data"]["receipt"]["call_id"]: c["data"]["receipt"]
        for c in of_type(events, "tool.completed")
    }
    assert set(by_call) == {c["data"]["call_id"] for c in called}

    statuses = []
    for call in called:
        receipt = by_call[call["data"]["call_id"]]
        statuses.append(receipt["status"])
        assert receipt["tool"] == call["data"]["tool"]
        assert receipt["run_id"] == run["id"]
        assert receipt["work_item_id"] == call["work_item_id"]
        assert receipt["arguments_sha256"] == canonical_sha256(call["data"]["arguments"])
        if receipt["result"] is None:
            assert receipt["result_sha256"] is None
        else:
            assert receipt["result_sha256"] == canonical_sha256(receipt["result"])
    assert statuses == ["ok", "ok", "ok", "error", "ok"]
    assert by_call[called[0]["data"]["call_id"]]["result"] == {"value": 2}
    assert by_call[called[4]["data"]["call_id"]]["result"] == {"value": 1024}
    assert "division by zero" in by_call[called[3]["data"]["call_id"]]["error"]

    in_order = [by_call[c["data"]["call_id"]] for c in called]
    for receipt in in_order:
        stored = body(await api.client.get(f"/v1/receipts/{receipt['id']}", headers=auth(key)))
        assert stored == receipt
    assert await receipts_of(api, key, run["id"]) == in_order
    assert await receipts_of(api, key, run["id"], limit=2) == in_order

    # The note landed in the run's thread as a system message, with its exact text.
    note = in_order[1]
    messages = body(
        await api.client.get(f"/v1/threads/{run['thread_id']}/messages", headers=auth(key))
    )["data"]
    system = [m for m in messages if m["role"] == "system"]
    assert [(m["id"], m["content"]) for m in system] == [
        (note["result"]["note_id"], "café, naïve, ✓ — kept as UTF-8")
    ]


async def test_an_unknown_receipt_or_another_tenants_receipts_are_not_found(api: Api) -> None:
    key = await api.key()
    stranger = await api.key("globex", ("admin",))
    run = await start_run(api, key, tool_line("math.evaluate", {"expression": "3"}))
    await wait_for_run(api, key, run["id"])
    (receipt,) = await receipts_of(api, key, run["id"])
    for path in [f"/v1/receipts/{receipt['id']}", f"/v1/runs/{run['id']}/receipts"]:
        assert_error(await api.client.get(path, headers=auth(stranger)), 404, "not_found")
    for path in [
        "/v1/receipts/00000000-0000-4000-8000-000000000000",
        "/v1/runs/00000000-0000-4000-8000-000000000000/receipts",
    ]:
        assert_error(await api.client.get(path, headers=auth(key)), 404, "not_found")


# -- the policy matrix in runs ------------------------------------------------------------


async def test_a_call_past_max_calls_per_run_gets_a_denied_receipt_and_the_run_goes_on(
    api: Api,
) -> None:
    admin = await api.key()
    policy = await set_policy(api, admin, "math.evaluate", max_calls_per_run=1)
    assert policy["max_calls_per_run"] == 1 and policy["version"] == 2
    text = "\n".join(
        [
            tool_line("math.evaluate", {"expression": "1+1"}),
            tool_line("math.evaluate", {"expression": "2+2"}),
            "two sums",
        ]
    )
    run = await start_run(api, admin, text)
    await wait_for_run(api, admin, run["id"])
    events = await run_events(api, admin, run["id"])

    decisions = [c["data"]["policy"] for c in of_type(events, "tool.called")]
    assert [(d["decision"], d["rule"]) for d in decisions] == [
        ("allow", "policy"),
        ("deny", "max_calls_per_run"),
    ]
    receipts = await receipts_of(api, admin, run["id"])
    assert [r["status"] for r in receipts] == ["ok", "denied"]
    assert receipts[1]["result"] is None and "max_calls_per_run" in receipts[1]["error"]
    assert [r["policy_version"] for r in receipts] == [2, 2]
    assert output_of(events) == 'two sums\nmath.evaluate: {"value":2}\nmath.evaluate: denied'


async def test_a_run_whose_creator_lacks_an_allowed_role_gets_a_denied_receipt(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    await set_policy(api, admin, "math.evaluate", allowed_roles=["admin"])
    text = tool_line("math.evaluate", {"expression": "6*7"}) + "\nroles"

    by_member = await start_run(api, member, text)
    by_admin = await start_run(api, admin, text)
    await wait_for_run(api, member, by_member["id"])
    await wait_for_run(api, admin, by_admin["id"])

    member_events = await run_events(api, member, by_member["id"])
    (called,) = of_type(member_events, "tool.called")
    assert (called["data"]["policy"]["decision"], called["data"]["policy"]["rule"]) == (
        "deny",
        "allowed_roles",
    )
    (denied,) = await receipts_of(api, member, by_member["id"])
    assert denied["status"] == "denied" and denied["result"] is None
    assert output_of(member_events) == "roles\nmath.evaluate: denied"

    admin_events = await run_events(api, admin, by_admin["id"])
    (allowed,) = await receipts_of(api, admin, by_admin["id"])
    assert allowed["status"] == "ok" and allowed["result"] == {"value": 42}
    assert output_of(admin_events) == 'roles\nmath.evaluate: {"value":42}'


# -- a tool backend that is down ----------------------------------------------------------


class _Backend(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        payload = b"hello from the backend"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def backend_on(port: int) -> Iterator[list[str]]:
    """A real HTTP server on the port; yields the paths it was asked for."""
    hits: list[str] = []
    handler = type("Backend", (_Backend,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("offline", "status", "line"),
    [
        ("fail", "error", "http.fetch: error 127.0.0.1 is unreachable"),
        ("skip", "skipped", "http.fetch: skipped"),
    ],
)
async def test_a_call_to_a_backend_that_is_down_follows_the_offline_rule(
    settings: Settings, offline: str, status: str, line: str
) -> None:
    async with running(settings, fetch_allow_hosts="127.0.0.1") as api:
        admin = await api.key()
        await set_policy(api, admin, "http.fetch", approval="none", offline=offline)
        url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
        run = await start_run(api, admin, tool_line("http.fetch", {"url": url}) + "\nfetch")
        await wait_for_run(api, admin, run["id"])
        events = await run_events(api, admin, run["id"])

        (receipt,) = await receipts_of(api, admin, run["id"])
        assert receipt["status"] == status
        assert receipt["result"] is None and receipt["result_sha256"] is None
        assert "unreachable" in receipt["error"]
        assert output_of(events).startswith("fetch\n" + line)


async def test_a_queued_call_waits_for_its_backend_and_runs_once_it_is_up(
    settings: Settings,
) -> None:
    async with running(settings, fetch_allow_hosts="127.0.0.1") as api:
        admin = await api.key()
        await set_policy(api, admin, "http.fetch", approval="none", offline="queue")
        port = free_port()
        text = tool_line("http.fetch", {"url": f"http://127.0.0.1:{port}/status"}) + "\nfetch"
        run = await start_run(api, admin, text)

        async def called() -> bool:
            return bool(of_type(await run_events(api, admin, run["id"]), "tool.called"))

        await eventually(called, "the call to be recorded")
        # Long enough for the worker to try the closed port, and retry it, more than once.
        await asyncio.sleep(5)
        waiting = await get_run(api, admin, run["id"])
        assert waiting["status"] == "active" and waiting["awaiting_approval"] is False
        events = await run_events(api, admin, run["id"])
        assert of_type(events, "tool.completed") == []
        assert await receipts_of(api, admin, run["id"]) == []

        with backend_on(port) as hits:
            await wait_for_run(api, admin, run["id"])
            events = await run_events(api, admin, run["id"])
        assert hits == ["/status"]
        (completed,) = of_type(events, "tool.completed")
        receipt = completed["data"]["receipt"]
        assert receipt["status"] == "ok"
        assert receipt["result"] == {"status": 200, "body": "hello from the backend"}
        assert output_of(events) == (
            'fetch\nhttp.fetch: {"status":200,"body":"hello from the backend"}'
        )


# -- bad input ----------------------------------------------------------------------------


async def test_calling_an_unknown_tool_is_404_and_arguments_that_do_not_fit_are_422(
    api: Api,
) -> None:
    key = await api.key()
    head = api.runtime.store.head()
    unknown = await api.client.post(
        "/v1/tools/call", json={"tool": "no.such.tool", "arguments": {}}, headers=auth(key)
    )
    assert_error(unknown, 404, "not_found")
    for arguments in [{}, {"expr": "1+1"}, {"expression": 5}, {"expression": "1", "extra": 1}]:
        response = await api.client.post(
            "/v1/tools/call",
            json={"tool": "math.evaluate", "arguments": arguments},
            headers=auth(key),
        )
        error = assert_error(response, 422, "validation_failed", issues=True)
        assert error["issues"] and all(i["path"][:1] == ["arguments"] for i in error["issues"])
    # Nothing was called, so nothing was recorded.
    assert api.runtime.store.head() == head


@pytest.mark.parametrize(
    "policy",
    [
        {"approval": "none", "aproval": "required"},
        {"max_calls_per_run": -1},
        {"allowed_roles": ["member", "superuser"]},
        {"approval": "sometimes"},
        {"offline": "later"},
    ],
    ids=["unknown-field", "negative-limit", "unknown-role", "unknown-tier", "unknown-offline"],
)
async def test_a_policy_that_does_not_fit_the_schema_is_422_and_changes_nothing(
    api: Api, policy: dict[str, Any]
) -> None:
    admin = await api.key()
    head = api.runtime.store.head()
    response = await api.client.put(
        "/v1/tools/policies/math.evaluate", json=policy, headers=auth(admin)
    )
    assert_error(response, 422, "validation_failed", issues=True)
    assert api.runtime.store.head() == head
    policies = body(await api.client.get("/v1/tools/policies", headers=auth(admin)))
    (math,) = [p for p in policies if p["tool"] == "math.evaluate"]
    assert math["version"] == 1


async def test_only_an_admin_may_change_a_policy_and_only_of_a_known_tool(api: Api) -> None:
    admin = await api.key()
    head = api.runtime.store.head()
    for roles in [("member",), ("operator",), ("viewer",), ("auditor",)]:
        key = await api.key(roles=roles)
        head = api.runtime.store.head()
        response = await api.client.put(
            "/v1/tools/policies/math.evaluate", json={"approval": "required"}, headers=auth(key)
        )
        assert_error(response, 403, "forbidden")
        assert api.runtime.store.head() == head
    response = await api.client.put(
        "/v1/tools/policies/no.such.tool", json={"approval": "required"}, headers=auth(admin)
    )
    assert_error(response, 404, "not_found")
    assert api.runtime.store.head() == head


async def test_each_tool_lists_a_self_contained_object_schema_of_its_arguments(api: Api) -> None:
    """The schema is what a model's tool calling gets as `parameters`; those want an object
    schema at the root, not a `$ref` into `$defs`."""
    key = await api.key(roles=("viewer",))
    tools = {t["name"]: t for t in body(await api.client.get("/v1/tools", headers=auth(key)))}
    expected = {
        "clock.now": ({}, []),
        "math.evaluate": ({"expression": {"type": "string"}}, ["expression"]),
        "thread.note": ({"text": {"type": "string"}}, ["text"]),
        "http.fetch": ({"url": {"type": "string"}}, ["url"]),
    }
    for name, (properties, required) in expected.items():
        schema = tools[name]["input_schema"]
        assert schema.get("type") == "object", (name, schema)
        assert schema.get("properties", {}) == properties, (name, schema)
        assert schema.get("required", []) == required, (name, schema)
        assert "$ref" not in schema, (name, schema)


async def test_each_policy_change_bumps_the_version_by_one_and_the_tools_show_it(
    api: Api,
) -> None:
    admin = await api.key()
    tools = body(await api.client.get("/v1/tools", headers=auth(admin)))
    assert {t["name"] for t in tools} >= {"clock.now", "math.evaluate", "thread.note", "http.fetch"}
    fetch = next(t for t in tools if t["name"] == "http.fetch")
    assert fetch["dangerous"] is True and fetch["source"] == "builtin"
    assert fetch["policy"]["approval"] == "required" and fetch["policy"]["version"] == 1
    math = next(t for t in tools if t["name"] == "math.evaluate")
    assert math["policy"]["version"] == 1 and math["policy"]["approval"] == "none"

    changes = [
        ({"max_calls_per_run": 5}, 2),
        ({"max_calls_per_run": 5}, 2),  # the same policy again changes nothing
        ({"max_calls_per_run": 5, "offline": "skip"}, 3),
        ({"max_calls_per_run": 5, "offline": "skip", "allowed_roles": ["admin", "member"]}, 4),
        ({"allowed_roles": ["member", "admin"], "max_calls_per_run": 5, "offline": "skip"}, 4),
        ({"approval": "admin"}, 5),
    ]
    for change, version in changes:
        policy = await set_policy(api, admin, "math.evaluate", **change)
        assert policy["version"] == version, (change, policy)
        assert policy["tool"] == "math.evaluate"
        for field, value in change.items():
            expected = sorted(value) if field == "allowed_roles" else value
            got = sorted(policy[field]) if field == "allowed_roles" else policy[field]
            assert got == expected, (field, policy)
        shown = body(await api.client.get("/v1/tools", headers=auth(admin)))
        assert next(t for t in shown if t["name"] == "math.evaluate")["policy"] == policy
        matrix = body(await api.client.get("/v1/tools/policies", headers=auth(admin)))
        assert next(p for p in matrix if p["tool"] == "math.evaluate") == policy
    # The last PUT set the whole policy: omitted fields went back to their defaults.
    assert policy == {
        "tool": "math.evaluate",
        "max_calls_per_run": None,
        "approval": "admin",
        "offline": "fail",
        "allowed_roles": ["admin", "member", "operator"],
        "version": 5,
    }
    # Another tenant still has the defaults.
    stranger = await api.key("globex", ("admin",))
    theirs = body(await api.client.get("/v1/tools/policies", headers=auth(stranger)))
    assert next(p for p in theirs if p["tool"] == "math.evaluate")["version"] == 1


# -- direct calls -------------------------------------------------------------------------


async def test_a_direct_call_of_an_allowed_tool_answers_its_receipt(api: Api) -> None:
    key = await api.key(roles=("member",))
    response = await api.client.post(
        "/v1/tools/call",
        json={"tool": "math.evaluate", "arguments": {"expression": "(1+2)*14"}},
        headers=auth(key),
    )
    receipt = body(response)
    assert receipt["status"] == "ok" and receipt["run_id"] is None
    assert receipt["result"] == {"value": 42} and receipt["error"] is None
    assert receipt["approval_id"] is None
    assert receipt["arguments_sha256"] == canonical_sha256({"expression": "(1+2)*14"})
    assert receipt["result_sha256"] == canonical_sha256({"value": 42})
    stored = body(
        await api.client.get(
            f"/v1/receipts/{receipt['id']}",
            headers=auth(key, **{"X-Nome-Min-Position": response.headers["x-nome-position"]}),
        )
    )
    assert stored == receipt


async def test_a_direct_call_that_needs_approval_runs_once_approved(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    await set_policy(api, admin, "math.evaluate", approval="required")
    asked = await api.client.post(
        "/v1/tools/call",
        json={"tool": "math.evaluate", "arguments": {"expression": "6*7"}},
        headers=auth(member),
    )
    pending = body(asked, 202)
    approval_id = pending["approval_id"]
    at = {"X-Nome-Min-Position": asked.headers["x-nome-position"]}
    approval = body(
        await api.client.get(f"/v1/approvals/{approval_id}", headers=auth(member, **at))
    )
    assert approval["status"] == "pending" and approval["run_id"] is None
    assert approval["tool"] == "math.evaluate"
    assert approval["arguments"] == {"expression": "6*7"}

    # Watch the workspace stream from the request on, to catch the receipt when it lands.
    after = int(asked.headers["x-nome-position"])
    async with LiveStream(api, f"/v1/events?after={after}", member) as workspace:
        approved = await api.client.post(
            f"/v1/approvals/{approval_id}/approve", headers=auth(member)
        )
        assert body(approved)["status"] == "approved"
        await workspace.until(b"event: tool.completed", "the direct call's receipt")
        seen = await workspace.close()
    (completed,) = [f.data for f in events_only(seen) if f.event == "tool.completed"]
    assert completed is not None
    receipt = completed["data"]["receipt"]
    assert receipt["call_id"] == completed["stream_id"]
    assert receipt["status"] == "ok" and receipt["result"] == {"value": 42}
    assert receipt["run_id"] is None and receipt["approval_id"] == approval_id

    shown = body(
        await api.client.get(
            f"/v1/approvals/{approval_id}",
            headers=auth(member, **{"X-Nome-Min-Position": str(completed["position"])}),
        )
    )
    assert shown["status"] == "approved" and shown["resolved_at"] is not None
    stored = body(await api.client.get(f"/v1/receipts/{receipt['id']}", headers=auth(member)))
    assert stored == receipt
    # It ran once: a second approval is refused and no second receipt appears.
    assert_error(
        await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=auth(member)),
        409,
        "already_resolved",
    )
    executed = [
        e for e in api.runtime.store.load(completed["stream_id"]) if e.type == "tool.completed"
    ]
    assert len(executed) == 1


async def test_a_direct_thread_note_adds_a_system_message_to_that_thread(api: Api) -> None:
    key = await api.key(roles=("member",))
    thread_id = await new_thread(api, key)
    response = await api.client.post(
        "/v1/tools/call",
        json={
            "tool": "thread.note",
            "arguments": {"text": "call Ada back"},
            "thread_id": thread_id,
        },
        headers=auth(key),
    )
    receipt = body(response)
    assert receipt["status"] == "ok" and receipt["run_id"] is None
    messages = body(
        await api.client.get(
            f"/v1/threads/{thread_id}/messages",
            headers=auth(key, **{"X-Nome-Min-Position": response.headers["x-nome-position"]}),
        )
    )["data"]
    assert [(m["id"], m["role"], m["content"]) for m in messages] == [
        (receipt["result"]["note_id"], "system", "call Ada back")
    ]
    # Without a thread there is nowhere to put the note.
    missing = await api.client.post(
        "/v1/tools/call",
        json={"tool": "thread.note", "arguments": {"text": "nowhere"}},
        headers=auth(key),
    )
    assert_error(missing, 422, "validation_failed")


# -- simulation ---------------------------------------------------------------------------


async def test_a_policy_simulation_reports_the_decisions_a_stricter_policy_would_change(
    api: Api,
) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    two = "\n".join(
        [
            tool_line("math.evaluate", {"expression": "1"}),
            tool_line("math.evaluate", {"expression": "2"}),
            "two",
        ]
    )
    one = tool_line("math.evaluate", {"expression": "3"}) + "\none"
    runs = [await start_run(api, admin, two), await start_run(api, member, one)]
    for run in runs:
        await wait_for_run(api, admin, run["id"])
    # A direct call is decided on the caller's key, not replayable: it is left out.
    body(
        await api.client.post(
            "/v1/tools/call",
            json={"tool": "math.evaluate", "arguments": {"expression": "4"}},
            headers=auth(admin),
        )
    )
    await api.settle()
    head = api.runtime.store.head()

    async def simulate(**policy: Any) -> dict[str, Any]:
        response = await api.client.post(
            "/v1/tools/policies/simulate",
            json={"tool": "math.evaluate", **policy},
            headers=auth(admin),
        )
        return body(response)

    stricter = await simulate(approval="required", max_calls_per_run=1)
    assert stricter["tool"] == "math.evaluate"
    assert stricter["calls_considered"] == 3 and stricter["changed"] == 3
    assert stricter["changes"] == {"allow -> approval_required": 2, "allow -> deny": 1}
    (denied,) = [c for c in stricter["calls"] if c["after"] == "deny"]
    assert denied["run_id"] == runs[0]["id"] and denied["rule"] == "max_calls_per_run"
    assert {c["run_id"] for c in stricter["calls"]} == {r["id"] for r in runs}

    admins_only = await simulate(allowed_roles=["admin"])
    assert admins_only["changes"] == {"allow -> deny": 1}
    (call,) = admins_only["calls"]
    assert call["run_id"] == runs[1]["id"] and call["rule"] == "allowed_roles"

    same = await simulate()
    assert same["calls_considered"] == 3 and same["changed"] == 0 and same["changes"] == {}

    # A simulation only looks: nothing is appended and the policy stays as it was.
    assert api.runtime.store.head() == head
    policies = body(await api.client.get("/v1/tools/policies", headers=auth(admin)))
    assert next(p for p in policies if p["tool"] == "math.evaluate")["version"] == 1
    member_tries = await api.client.post(
        "/v1/tools/policies/simulate", json={"tool": "math.evaluate"}, headers=auth(member)
    )
    assert_error(member_tries, 403, "forbidden")
    unknown = await api.client.post(
        "/v1/tools/policies/simulate", json={"tool": "no.such.tool"}, headers=auth(admin)
    )
    assert_error(unknown, 404, "not_found")
