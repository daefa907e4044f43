"""Agents (API.md §4): CRUD, the default agent, and the snapshot a run takes of its agent."""

from __future__ import annotations

from typing import Any

import httpx

from nome_core.agents.state import default_agent_id
from nome_core.tenants.state import tenant_id_for
from nome_core.tools.builtin import BUILTIN_TOOLS
from tests.support.api import Api, auth
from tests.support.api_runs import (
    MATH,
    TIME,
    ZERO,
    finish,
    finished_run,
    new_thread,
    position,
    post_run,
    read_run,
)
from tests.support.errors import assert_error

AGENT_KEYS = {
    "id",
    "name",
    "instructions",
    "provider",
    "model",
    "tools",
    "tier",
    "created_at",
    "updated_at",
    "context_tokens",
}


async def create_agent(api: Api, key: str, **body: Any) -> httpx.Response:
    return await api.client.post(
        "/v1/agents",
        json={"name": "helper", "instructions": "Be brief.", **body},
        headers=auth(key),
    )


async def new_agent(api: Api, key: str, **body: Any) -> tuple[dict[str, Any], int]:
    response = await create_agent(api, key, **body)
    assert response.status_code == 201, response.text
    return response.json(), position(response)


async def get_agent(api: Api, key: str, agent_id: str, at: int) -> httpx.Response:
    return await api.client.get(
        f"/v1/agents/{agent_id}", headers=auth(key, **{"X-Nome-Min-Position": str(at)})
    )


async def run_created(api: Api, key: str, run_id: str) -> dict[str, Any]:
    events = await finish(api, key, run_id)
    assert events[0]["type"] == "run.created"
    return dict(events[0]["data"])


# -- CRUD ---------------------------------------------------------------------------------


async def test_an_agent_is_created_with_scripted_defaults_and_reads_back_the_same(
    api: Api,
) -> None:
    key = await api.key()
    agent, at = await new_agent(api, key)
    assert set(agent) == AGENT_KEYS
    assert agent["name"] == "helper" and agent["instructions"] == "Be brief."
    assert agent["provider"] == "scripted" and agent["model"] == "scripted-1"
    assert agent["tools"] == sorted(BUILTIN_TOOLS)
    assert agent["tier"] == "standard"
    assert agent["context_tokens"] == 8000
    assert TIME.match(agent["created_at"]) and agent["updated_at"] == agent["created_at"]
    read = await get_agent(api, key, agent["id"], at)
    assert read.status_code == 200 and read.json() == agent


async def test_agents_are_listed_with_a_cursor_and_a_total(api: Api) -> None:
    key = await api.key()
    made = [(await new_agent(api, key, name=f"agent {i}"))[0]["id"] for i in range(3)]
    await api.settle()
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/agents", params=params, headers=auth(key))).json()
        assert page["total_count"] == 3
        seen += [a["id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 3


async def test_patching_an_agent_changes_only_the_given_fields(api: Api) -> None:
    key = await api.key()
    agent, _ = await new_agent(api, key, tools=["clock.now"], tier="fast")
    response = await api.client.patch(
        f"/v1/agents/{agent['id']}",
        json={"instructions": "Be thorough.", "tier": "deep"},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["instructions"] == "Be thorough." and patched["tier"] == "deep"
    assert patched["name"] == agent["name"] and patched["tools"] == ["clock.now"]
    assert patched["created_at"] == agent["created_at"]
    assert patched["updated_at"] > agent["updated_at"]
    read = await get_agent(api, key, agent["id"], position(response))
    assert read.json() == patched


async def test_a_deleted_agent_is_gone_from_reads_and_lists(api: Api) -> None:
    key = await api.key()
    agent, _ = await new_agent(api, key)
    kept, _ = await new_agent(api, key, name="kept")
    response = await api.client.delete(f"/v1/agents/{agent['id']}", headers=auth(key))
    assert response.status_code == 204
    at = position(response)
    assert_error(await get_agent(api, key, agent["id"], at), 404, "not_found")
    listed = await api.client.get(
        "/v1/agents", headers=auth(key, **{"X-Nome-Min-Position": str(at)})
    )
    assert [a["id"] for a in listed.json()["data"]] == [kept["id"]]
    assert listed.json()["total_count"] == 1
    for again in [
        await api.client.delete(f"/v1/agents/{agent['id']}", headers=auth(key)),
        await api.client.patch(f"/v1/agents/{agent['id']}", json={"name": "x"}, headers=auth(key)),
    ]:
        assert_error(again, 404, "not_found")


async def test_agent_changes_need_the_admin_role_and_reads_need_only_viewer(api: Api) -> None:
    admin = await api.key()
    member = await api.key(roles=("member",))
    viewer = await api.key(roles=("viewer",))
    agent, at = await new_agent(api, admin)
    assert_error(await create_agent(api, member), 403, "forbidden")
    patch = await api.client.patch(
        f"/v1/agents/{agent['id']}", json={"name": "mine"}, headers=auth(member)
    )
    assert_error(patch, 403, "forbidden")
    delete = await api.client.delete(f"/v1/agents/{agent['id']}", headers=auth(member))
    assert_error(delete, 403, "forbidden")
    assert (await get_agent(api, viewer, agent["id"], at)).json() == agent
    listed = await api.client.get("/v1/agents", headers=auth(viewer))
    assert listed.status_code == 200


async def test_an_agent_with_an_unknown_tool_is_422_on_create_and_on_patch(api: Api) -> None:
    key = await api.key()
    head = api.runtime.store.head()
    created = await create_agent(api, key, tools=["clock.now", "teleport"])
    assert "teleport" in assert_error(created, 422, "validation_failed")["error"]
    assert api.runtime.store.head() == head
    agent, at = await new_agent(api, key)
    patched = await api.client.patch(
        f"/v1/agents/{agent['id']}", json={"tools": ["teleport"]}, headers=auth(key)
    )
    assert_error(patched, 422, "validation_failed")
    assert (await get_agent(api, key, agent["id"], at)).json()["tools"] == agent["tools"]


async def test_invalid_agent_bodies_are_422(api: Api) -> None:
    key = await api.key()
    for body in [
        {"name": "", "instructions": "x"},
        {"instructions": "x"},
        {"name": "a", "instructions": "x", "provider": "oracle"},
        {"name": "a", "instructions": "x", "tier": "ludicrous"},
        {"name": "a", "instructions": "x", "colour": "blue"},
    ]:
        response = await api.client.post("/v1/agents", json=body, headers=auth(key))
        assert_error(response, 422, "validation_failed", issues=True)


async def test_another_tenants_agent_is_404_and_cannot_run(api: Api) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    agent, at = await new_agent(api, globex)
    assert_error(await get_agent(api, acme, agent["id"], at), 404, "not_found")
    patch = await api.client.patch(
        f"/v1/agents/{agent['id']}", json={"name": "stolen"}, headers=auth(acme)
    )
    assert_error(patch, 404, "not_found")
    delete = await api.client.delete(f"/v1/agents/{agent['id']}", headers=auth(acme))
    assert_error(delete, 404, "not_found")
    listed = await api.client.get("/v1/agents", headers=auth(acme))
    assert listed.json()["data"] == []
    thread_id = await new_thread(api, acme)
    run = await post_run(api, acme, thread_id, "hi", agent_id=agent["id"])
    assert_error(run, 404, "not_found")
    for path in ["/v1/agents/nope", f"/v1/agents/{ZERO}"]:
        assert_error(await api.client.get(path, headers=auth(acme)), 404, "not_found")


# -- agents and runs ----------------------------------------------------------------------


async def test_a_run_without_an_agent_uses_the_tenants_default_agent(api: Api) -> None:
    key = await api.key()
    run, events = await finished_run(api, key, "hello")
    default_id = default_agent_id(tenant_id_for("acme"))
    assert run["agent_id"] == default_id
    assert events[0]["data"]["agent_id"] == default_id
    listed = await api.client.get(
        "/v1/agents", headers=auth(key, **{"X-Nome-Min-Position": str(events[-1]["position"])})
    )
    (default,) = listed.json()["data"]
    assert default["id"] == default_id and default["name"] == "default"
    assert events[0]["data"]["agent"] == {
        "provider": default["provider"],
        "model": default["model"],
        "instructions": default["instructions"],
        "tools": default["tools"],
    }
    second, _ = await finished_run(api, key, "again")
    assert second["agent_id"] == default_id
    await api.settle()
    assert (await api.client.get("/v1/agents", headers=auth(key))).json()["total_count"] == 1


async def test_a_run_carries_a_snapshot_of_its_agent_that_later_edits_do_not_change(
    api: Api,
) -> None:
    key = await api.key()
    agent, _ = await new_agent(api, key, instructions="Version one.", tier="deep")
    thread_id = await new_thread(api, key)
    first, _ = await finished_run(api, key, "one", thread_id=thread_id, agent_id=agent["id"])
    assert first["agent_id"] == agent["id"] and first["tier"] == "deep"
    patched = await api.client.patch(
        f"/v1/agents/{agent['id']}",
        json={"instructions": "Version two.", "tools": ["clock.now"]},
        headers=auth(key),
    )
    assert patched.status_code == 200
    second, _ = await finished_run(
        api, key, "two", thread_id=thread_id, agent_id=agent["id"], tier="fast"
    )
    assert second["tier"] == "fast"
    one, two = await run_created(api, key, first["id"]), await run_created(api, key, second["id"])
    assert one["agent_id"] == two["agent_id"] == agent["id"]
    assert one["agent"] == {
        "provider": "scripted",
        "model": "scripted-1",
        "instructions": "Version one.",
        "tools": sorted(BUILTIN_TOOLS),
    }
    assert two["agent"]["instructions"] == "Version two."
    assert two["agent"]["tools"] == ["clock.now"]
    assert one["tier"] == "deep" and two["tier"] == "fast"


async def test_a_run_with_a_deleted_agent_is_404(api: Api) -> None:
    key = await api.key()
    agent, _ = await new_agent(api, key)
    thread_id = await new_thread(api, key)
    deleted = await api.client.delete(f"/v1/agents/{agent['id']}", headers=auth(key))
    assert deleted.status_code == 204
    assert_error(await post_run(api, key, thread_id, "hi", agent_id=agent["id"]), 404, "not_found")
    chat = await api.client.post(
        "/v1/chat", json={"input": "hi", "agent_id": agent["id"]}, headers=auth(key)
    )
    assert_error(chat, 404, "not_found")
    await api.settle()
    runs = (await api.client.get("/v1/runs", headers=auth(key))).json()
    assert runs["total_count"] == 0


async def test_a_run_cannot_call_a_tool_its_agent_does_not_have(api: Api) -> None:
    key = await api.key()
    agent, _ = await new_agent(api, key, tools=["clock.now"])
    run, events = await finished_run(api, key, MATH + "\nsum", agent_id=agent["id"])
    assert run["status"] == "completed"
    called = next(e for e in events if e["type"] == "tool.called")
    assert called["data"]["tool"] == "math.evaluate"
    assert called["data"]["policy"]["decision"] == "deny"
    receipt = next(e for e in events if e["type"] == "tool.completed")["data"]["receipt"]
    assert receipt["status"] == "denied" and receipt["result"] is None
    assert events[-1]["data"]["output"] == "sum\nmath.evaluate: denied"
    allowed, events = await finished_run(api, key, "/tool clock.now {}\nnow", agent_id=agent["id"])
    receipt = next(e for e in events if e["type"] == "tool.completed")["data"]["receipt"]
    assert receipt["status"] == "ok" and set(receipt["result"]) == {"now"}
    assert allowed["status"] == "completed"
    assert await read_run(api, key, allowed["id"], events[-1]["position"]) == allowed


async def test_the_default_agent_cannot_be_deleted_but_can_be_changed(api: Api) -> None:
    key = await api.key()
    run = await api.client.post("/v1/chat", json={"input": "hi"}, headers=auth(key))
    assert run.status_code in (200, 202), run.text
    await api.settle()
    (default,) = (await api.client.get("/v1/agents", headers=auth(key))).json()["data"]

    refused = await api.client.delete(f"/v1/agents/{default['id']}", headers=auth(key))
    renamed = await api.client.patch(
        f"/v1/agents/{default['id']}", json={"name": "house"}, headers=auth(key)
    )

    assert_error(refused, 409, "conflict")
    assert renamed.status_code == 200 and renamed.json()["name"] == "house"
