"""The approval queue over HTTP (API.md §5): one answer wins, roles gate the tiers, and every
path (approve, deny, expire) ends in a completed run whose replay equals its live stream.

The test client runs the app on a loop of its own and buffers each whole response, blocking
the test's loop meanwhile. Two helpers get around that where it matters: `concurrently`
sends requests from threads so they really overlap inside the app, and `LiveStream` reads
an SSE response frame by frame on the app's loop while the test goes on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from litestar.testing import transport as asgi_transport

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
from tests.support.sse import events_only

SIX_TIMES_SEVEN = '/tool math.evaluate {"expression": "6*7"}\nwhat is six times seven'
ANSWER_OK = 'what is six times seven\nmath.evaluate: {"value":42}'
ANSWER_DENIED = "what is six times seven\nmath.evaluate: denied"


# -- helpers ------------------------------------------------------------------------------


async def pending_approval(
    api: Api, key: str, run_id: str, *, status: str | None = "pending"
) -> dict[str, Any]:
    """The run's approval, once the queue lists it (as pending, unless `status` says else)."""
    params = {"status": status} if status else {}

    async def probe() -> dict[str, Any] | None:
        page = body(await api.client.get("/v1/approvals", params=params, headers=auth(key)))
        return next((a for a in page["data"] if a["run_id"] == run_id), None)

    return await eventually(probe, f"an approval of run {run_id}")


async def concurrently(api: Api, requests: Sequence[httpx.Request]) -> list[httpx.Response]:
    """Send requests from one thread each, released together, so they overlap in the app."""
    transport = asgi_transport.TestClientTransport(api.client)
    barrier = threading.Barrier(len(requests))

    def send(request: httpx.Request) -> httpx.Response:
        barrier.wait()
        response = transport.handle_request(request)
        response.read()
        return response

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, send, r) for r in requests)))


async def replay_bytes(api: Api, key: str, run_id: str) -> bytes:
    response = await api.client.get(f"/v1/runs/{run_id}/replay", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return response.content


def without_keepalives(raw: bytes) -> bytes:
    return b"".join(frame.raw for frame in events_only(raw))


async def verdicts(api: Api, key: str, run_id: str) -> list[dict[str, Any]]:
    """Two verifications of the run; they append nothing."""
    head = api.runtime.store.head()
    found = [
        body(await api.client.post(f"/v1/runs/{run_id}/verify", headers=auth(key)))
        for _ in range(2)
    ]
    assert api.runtime.store.head() == head
    return found


# -- one winner ---------------------------------------------------------------------------


async def test_fifty_concurrent_approvals_of_one_approval_let_exactly_one_win_and_run_the_tool_once(
    api: Api,
) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    await set_policy(api, admin, "math.evaluate", approval="required")
    run = await start_run(api, member, SIX_TIMES_SEVEN)
    approval = await pending_approval(api, member, run["id"])

    url = f"/v1/approvals/{approval['id']}/approve"
    requests = [
        api.client.build_request("POST", url, json={"reason": f"try {i}"}, headers=auth(member))
        for i in range(50)
    ]
    responses = await concurrently(api, requests)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49, statuses
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "already_resolved")
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    assert winner["id"] == approval["id"] and winner["status"] == "approved"

    await wait_for_run(api, member, run["id"])
    events = await run_events(api, member, run["id"])
    resolved = of_type(events, "approval.resolved")
    assert len(resolved) == 1
    assert resolved[0]["data"]["decision"] == "approved"
    assert resolved[0]["data"]["reason"] == winner["reason"]
    completed = of_type(events, "tool.completed")
    assert [c["data"]["receipt"]["status"] for c in completed] == ["ok"]
    assert output_of(events) == ANSWER_OK


# -- who may answer -------------------------------------------------------------------------


async def test_a_member_cannot_resolve_an_admin_tier_approval_but_an_admin_can(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    await set_policy(api, admin, "math.evaluate", approval="admin")
    run = await start_run(api, member, SIX_TIMES_SEVEN)
    approval = await pending_approval(api, member, run["id"])
    assert approval["tier"] == "admin"

    for action in ("approve", "deny"):
        response = await api.client.post(
            f"/v1/approvals/{approval['id']}/{action}", headers=auth(member)
        )
        assert_error(response, 403, "forbidden")
    still = body(await api.client.get(f"/v1/approvals/{approval['id']}", headers=auth(member)))
    assert still["status"] == "pending"

    approved = body(
        await api.client.post(f"/v1/approvals/{approval['id']}/approve", headers=auth(admin))
    )
    assert approved["status"] == "approved"
    await wait_for_run(api, member, run["id"])
    events = await run_events(api, member, run["id"])
    assert len(of_type(events, "approval.resolved")) == 1
    assert output_of(events) == ANSWER_OK


async def test_a_viewer_can_resolve_no_approval(api: Api) -> None:
    admin = await api.key()
    viewer = await api.key(roles=("viewer",))
    await set_policy(api, admin, "math.evaluate", approval="required")
    run = await start_run(api, admin, SIX_TIMES_SEVEN)
    approval = await pending_approval(api, viewer, run["id"])
    assert approval["tier"] == "required"

    for action in ("approve", "deny"):
        response = await api.client.post(
            f"/v1/approvals/{approval['id']}/{action}", json={}, headers=auth(viewer)
        )
        assert_error(response, 403, "forbidden")
    # The viewer can still read the queue, and the approval is untouched.
    still = body(await api.client.get(f"/v1/approvals/{approval['id']}", headers=auth(viewer)))
    assert still["status"] == "pending" and still["resolved_at"] is None
    events = await run_events(api, admin, run["id"])
    assert of_type(events, "approval.resolved") == []


async def test_an_unknown_or_another_tenants_approval_is_not_found(api: Api) -> None:
    admin = await api.key()
    stranger = await api.key("globex", ("admin",))
    await set_policy(api, admin, "math.evaluate", approval="required")
    run = await start_run(api, admin, SIX_TIMES_SEVEN)
    approval = await pending_approval(api, admin, run["id"])

    unknown = "00000000-0000-4000-8000-000000000000"
    for approval_id, key in [(unknown, admin), ("not-an-id", admin), (approval["id"], stranger)]:
        for action in ("approve", "deny"):
            response = await api.client.post(
                f"/v1/approvals/{approval_id}/{action}", headers=auth(key)
            )
            assert_error(response, 404, "not_found")
        assert_error(
            await api.client.get(f"/v1/approvals/{approval_id}", headers=auth(key)),
            404,
            "not_found",
        )
    listed = body(await api.client.get("/v1/approvals", headers=auth(stranger)))
    assert listed["data"] == [] and listed["total_count"] == 0
    mine = body(await api.client.get(f"/v1/approvals/{approval['id']}", headers=auth(admin)))
    assert mine["status"] == "pending"


# -- approve, deny, expire: each ends in a completed run, replayable byte for byte ---------


async def walk_approval_path(api: Api, key: str, action: str) -> dict[str, Any]:
    """Run a call that needs approval through `action` (approve, deny or expire), watching
    the run's live stream from before the approval to the run's end. Checks what every path
    shares and returns what it saw."""
    run = await start_run(api, key, SIX_TIMES_SEVEN)
    async with LiveStream(api, f"/v1/runs/{run['id']}/stream", key) as live:
        await live.until(b"event: approval.requested", "the approval request on the live stream")
        approval = await resolve_while_streaming(api, key, run["id"], action)
        live_bytes = await live.finished()
    finished = await wait_for_run(api, key, run["id"])
    assert finished["awaiting_approval"] is False
    events = await run_events(api, key, run["id"])
    assert events[-1]["type"] == "run.completed"
    assert len(of_type(events, "approval.requested")) == 1
    assert len(of_type(events, "approval.resolved")) == 1

    # The run as folded from its log awaited the approval exactly between request and answer.
    requested_seq = of_type(events, "approval.requested")[0]["seq"]
    resolved_seq = of_type(events, "approval.resolved")[0]["seq"]
    for seq, awaiting in [(requested_seq, True), (resolved_seq, False)]:
        state = body(
            await api.client.get(
                f"/v1/runs/{run['id']}/state", params={"at": seq}, headers=auth(key)
            )
        )
        assert state["run"]["awaiting_approval"] is awaiting, (seq, state["run"])

    # Replays equal the live stream (keepalives aside) and each other, byte for byte.
    first, second = await replay_bytes(api, key, run["id"]), await replay_bytes(api, key, run["id"])
    assert first == second
    assert b": keepalive" not in first
    assert without_keepalives(live_bytes) == first
    assert [f.data["seq"] for f in events_only(first) if f.data] == [e["seq"] for e in events]

    one, two = await verdicts(api, key, run["id"])
    assert one == two
    assert one["deterministic"] is True and one["divergence"] is None
    assert one["events_compared"] > 0

    (completed,) = of_type(events, "tool.completed")
    receipt = completed["data"]["receipt"]
    assert receipt["approval_id"] == approval["id"]
    assert receipt["run_id"] == run["id"]
    stored = body(await api.client.get(f"/v1/receipts/{receipt['id']}", headers=auth(key)))
    assert stored == receipt
    return {
        "run": run,
        "approval": approval,
        "events": events,
        "receipt": receipt,
        "resolved": of_type(events, "approval.resolved")[0]["data"],
    }


async def resolve_while_streaming(api: Api, key: str, run_id: str, action: str) -> dict[str, Any]:
    """Answer the run's approval with `action`, or for `expire` wait until the sweeper has."""
    # A one-second approval may be gone from the pending queue before it is looked at.
    approval = await pending_approval(
        api, key, run_id, status=None if action == "expire" else "pending"
    )
    assert approval["tool"] == "math.evaluate"
    assert approval["arguments"] == {"expression": "6*7"}

    if action == "expire":
        expired = await eventually(
            lambda: _approval_if(api, key, approval["id"], "expired"), "the approval to expire"
        )
        assert expired["resolved_at"] is not None
    else:
        waiting = await eventually(
            lambda: _run_if_awaiting(api, key, run_id), "the run to show it awaits approval"
        )
        assert waiting["status"] == "active"
        response = await api.client.post(
            f"/v1/approvals/{approval['id']}/{action}",
            json={"reason": f"{action} in a test"},
            headers=auth(key),
        )
        answered = body(response)
        decision = "approved" if action == "approve" else "denied"
        assert answered["status"] == decision and answered["reason"] == f"{action} in a test"
        shown = body(
            await api.client.get(
                f"/v1/approvals/{approval['id']}",
                headers=auth(key, **{"X-Nome-Min-Position": response.headers["x-nome-position"]}),
            )
        )
        assert shown == answered
        # A second answer, of either kind, loses.
        for again in ("approve", "deny"):
            assert_error(
                await api.client.post(f"/v1/approvals/{approval['id']}/{again}", headers=auth(key)),
                409,
                "already_resolved",
            )

    return approval


async def _approval_if(api: Api, key: str, approval_id: str, status: str) -> Any:
    found = body(await api.client.get(f"/v1/approvals/{approval_id}", headers=auth(key)))
    assert found["status"] in ("pending", status), found
    return found if found["status"] == status else None


async def _run_if_awaiting(api: Api, key: str, run_id: str) -> Any:
    run = await get_run(api, key, run_id)
    return run if run["awaiting_approval"] else None


async def test_an_approved_call_runs_and_the_run_replays_exactly_as_it_streamed(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member", "operator"))
    await set_policy(api, admin, "math.evaluate", approval="required")
    seen = await walk_approval_path(api, member, "approve")

    assert seen["resolved"]["decision"] == "approved"
    assert seen["receipt"]["status"] == "ok"
    assert seen["receipt"]["result"] == {"value": 42}
    assert output_of(seen["events"]) == ANSWER_OK
    approved = body(
        await api.client.get("/v1/approvals", params={"status": "approved"}, headers=auth(member))
    )
    assert [a["id"] for a in approved["data"]] == [seen["approval"]["id"]]
    pending = body(
        await api.client.get("/v1/approvals", params={"status": "pending"}, headers=auth(member))
    )
    assert pending["data"] == [] and pending["total_count"] == 0


async def test_a_denied_call_gets_a_denied_receipt_and_the_run_replays_exactly_as_it_streamed(
    api: Api,
) -> None:
    admin = await api.key()
    member = await api.key(roles=("member", "operator"))
    await set_policy(api, admin, "math.evaluate", approval="required")
    seen = await walk_approval_path(api, member, "deny")

    assert seen["resolved"]["decision"] == "denied"
    assert seen["resolved"]["reason"] == "deny in a test"
    assert seen["receipt"]["status"] == "denied"
    assert seen["receipt"]["result"] is None and seen["receipt"]["result_sha256"] is None
    assert output_of(seen["events"]) == ANSWER_DENIED
    messages = body(
        await api.client.get(
            f"/v1/threads/{seen['run']['thread_id']}/messages", headers=auth(member)
        )
    )
    assert [m["content"] for m in messages["data"] if m["role"] == "assistant"] == [ANSWER_DENIED]


async def test_an_unanswered_approval_expires_and_the_run_completes_as_if_denied(
    settings: Settings,
) -> None:
    async with running(settings, approval_ttl_s=1) as api:
        admin = await api.key()
        await set_policy(api, admin, "math.evaluate", approval="required")
        seen = await walk_approval_path(api, admin, "expire")

        assert seen["resolved"]["decision"] == "expired"
        assert seen["resolved"]["by"] == "system:expiry"
        assert seen["receipt"]["status"] == "denied"
        assert output_of(seen["events"]) == ANSWER_DENIED
        (requested,) = of_type(seen["events"], "approval.requested")
        assert requested["data"]["expires_at"] == seen["approval"]["expires_at"]
        expired = body(
            await api.client.get("/v1/approvals", params={"status": "expired"}, headers=auth(admin))
        )
        assert [a["id"] for a in expired["data"]] == [seen["approval"]["id"]]
        # Too late to answer now.
        assert_error(
            await api.client.post(
                f"/v1/approvals/{seen['approval']['id']}/approve", headers=auth(admin)
            ),
            409,
            "already_resolved",
        )


# http.fetch needs an approval by default.
FETCH_INPUT = '/tool http.fetch {"url": "https://example.com/"}\nfetch it'


async def test_deleting_a_thread_cancels_its_waiting_run_and_takes_its_approval_off_the_queue(
    api: Api,
) -> None:
    key = await api.key()
    thread_id = await new_thread(api, key)
    run = await start_run(api, key, FETCH_INPUT, thread_id)
    approval = await pending_approval(api, key, run["id"])

    deleted = await api.client.delete(f"/v1/threads/{thread_id}", headers=auth(key))

    assert deleted.status_code == 204, deleted.text
    at = {"X-Nome-Min-Position": deleted.headers["x-nome-position"]}
    cancelled = body(await api.client.get(f"/v1/runs/{run['id']}", headers=auth(key, **at)))
    assert cancelled["status"] == "cancelled" and not cancelled["awaiting_approval"]
    withdrawn = body(
        await api.client.get(f"/v1/approvals/{approval['id']}", headers=auth(key, **at))
    )
    assert withdrawn["status"] == "denied" and withdrawn["reason"] == "the run was cancelled"
    # Nobody can approve it any more, so its fetch never runs.
    late = await api.client.post(f"/v1/approvals/{approval['id']}/approve", headers=auth(key))
    assert late.status_code == 409, late.text
    events = await run_events(api, key, run["id"])
    assert events[-1]["type"] == "run.cancelled"
    assert events[-1]["data"]["reason"] == "the thread was deleted"
    assert not of_type(events, "tool.started") and not of_type(events, "tool.completed")
