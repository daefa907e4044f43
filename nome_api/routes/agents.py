"""Agents (API.md §4)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from nome_api.context import Req, actor_of, caller_of, json_bytes, runtime_of, stored_doc
from nome_api.errors import ApiError
from nome_api.idempotency import idempotent
from nome_api.ids import checked_id
from nome_api.pagination import DEFAULT_LIMIT, index_page
from nome_api.schemas import CreateAgent, PageOf, UpdateAgent
from nome_core.agents.state import AgentState
from nome_core.runs import scripted
from projections.agents import AgentView

_encode = msgspec.json.Encoder().encode


def agent_json(state: AgentState | None) -> bytes:
    assert state is not None
    return _encode(
        AgentView(
            id=state.id,
            name=state.name,
            instructions=state.instructions,
            provider=state.provider,
            model=state.model,
            tools=state.tools,
            tier=state.tier,
            created_at=state.created_at,
            updated_at=state.updated_at,
        )
    )


def _check_tools(request: Req, tools: list[str] | None) -> None:
    known = runtime_of(request).registry.names(caller_of(request).tenant_id)
    unknown = sorted(set(tools or []) - set(known))
    if unknown:
        raise ApiError(422, f"unknown tools: {', '.join(unknown)}", code="validation_failed")


@post("/", status_code=201, summary="Create an agent", opt={"role": "admin"})
async def create_agent(request: Req, data: JSONBody[CreateAgent]) -> Response[AgentView]:
    _check_tools(request, data.tools)

    async def run() -> Response[Any]:
        runtime = runtime_of(request)
        model = data.model or (
            scripted.MODEL if data.provider == "scripted" else runtime.settings.openai_model
        )
        outcome = await runtime.app.create_agent(
            actor_of(request),
            name=data.name,
            instructions=data.instructions,
            provider=data.provider,
            model=model,
            tools=list(data.tools)
            if data.tools is not None
            else runtime.registry.names(caller_of(request).tenant_id),
            tier=data.tier,
        )
        return json_bytes(agent_json(outcome.state), status=201, position=outcome.position)

    return await idempotent(request, run)


@get("/", summary="List agents")
async def list_agents(
    request: Req,
    limit: Annotated[int, QueryParameter()] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[PageOf[AgentView]]:
    runtime, tenant = runtime_of(request), caller_of(request).tenant_id
    agents = runtime.read_models.agents
    return json_bytes(
        await index_page(
            runtime.redis,
            agents.index(tenant),
            limit=limit,
            cursor=cursor,
            doc_key=lambda agent_id: agents.doc(tenant, agent_id),
        )
    )


@get("/{agent_id:str}", summary="Get an agent")
async def get_agent(request: Req, agent_id: FromPath[str]) -> Response[AgentView]:
    views = runtime_of(request).read_models.agents
    return await stored_doc(request, lambda tenant: views.doc(tenant, agent_id), "agent")


@patch("/{agent_id:str}", summary="Change an agent", opt={"role": "admin"})
async def update_agent(
    request: Req, agent_id: FromPath[str], data: JSONBody[UpdateAgent]
) -> Response[AgentView]:
    _check_tools(request, data.tools)
    outcome = await runtime_of(request).app.update_agent(
        actor_of(request), checked_id(agent_id, "agent"), **msgspec.structs.asdict(data)
    )
    return json_bytes(agent_json(outcome.state), position=outcome.position)


@delete("/{agent_id:str}", summary="Delete an agent", opt={"role": "admin"})
async def delete_agent(request: Req, agent_id: FromPath[str]) -> Response[None]:
    outcome = await runtime_of(request).app.delete_agent(
        actor_of(request), checked_id(agent_id, "agent")
    )
    return Response(None, status_code=204, headers={"X-Nome-Position": str(outcome.position)})


router = Router(
    path="/v1/agents",
    route_handlers=[create_agent, list_agents, get_agent, update_agent, delete_agent],
    tags=["agents"],
)
