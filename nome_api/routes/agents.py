"""Agents (API.md §4)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from nome_api.context import (
    DEFAULT_PAGE,
    Cursor,
    Limit,
    Req,
    actor_of,
    caller_of,
    found,
    json_bytes,
    runtime_of,
)
from nome_api.errors import ApiError
from nome_api.idempotency import idempotent, result_of
from nome_api.ids import checked_id
from nome_api.openapi import IDEMPOTENT, errors
from nome_api.schemas import PageOf, Strict, ToolName
from nome_core.agents.commands import CreateAgent, DeleteAgent, UpdateAgent
from nome_core.agents.state import AgentState, evolve
from nome_core.bus import Claim, Claimed
from nome_core.values import SCRIPTED_MODEL, Provider, Tier
from projections.agents import AgentView, view_of

_encode = msgspec.json.Encoder().encode
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Instructions = Annotated[str, msgspec.Meta(max_length=50_000)]
Model = Annotated[str, msgspec.Meta(max_length=200)]
Tools = Annotated[list[ToolName], msgspec.Meta(max_length=64)]
# The conversation budget its runs send the model, in tokens (words); default 8,000.
ContextTokens = Annotated[int, msgspec.Meta(ge=100, le=1_000_000)]


class CreateAgentBody(Strict):
    name: Name
    instructions: Instructions
    provider: Provider = "scripted"
    model: Model | None = None
    tools: Tools | None = None
    tier: Tier = "standard"
    context_tokens: ContextTokens | None = None


class UpdateAgentBody(Strict):
    name: Name | None = None
    instructions: Instructions | None = None
    provider: Provider | None = None
    model: Model | None = None
    tools: Tools | None = None
    tier: Tier | None = None
    context_tokens: ContextTokens | None = None


def _agent(state: AgentState | None) -> bytes:
    assert state is not None
    return _encode(view_of(state))


async def _known_tools(request: Req, tools: list[str] | None) -> list[str]:
    """The tenant's callable tools; 422 if `tools` names one it does not have."""
    specs = await runtime_of(request).queries.registry.specs(caller_of(request).tenant_id)
    names = [spec.name for spec in specs]
    unknown = sorted(set(tools or []) - set(names))
    if unknown:
        raise ApiError(422, f"unknown tools: {', '.join(unknown)}", code="validation_failed")
    return names


@post("/", status_code=201, summary="Create an agent", opt={"role": "admin", **IDEMPOTENT})
async def create_agent(request: Req, data: JSONBody[CreateAgentBody]) -> Response[AgentView]:
    known = await _known_tools(request, data.tools)

    async def run(claim: Claim | None) -> Response[Any]:
        runtime = runtime_of(request)
        default_model = (
            SCRIPTED_MODEL if data.provider == "scripted" else runtime.settings.openai_model
        )
        cmd = CreateAgent(
            agent_id=runtime.app.new_id(),
            name=data.name,
            instructions=data.instructions,
            provider=data.provider,
            model=data.model or default_model,
            tools=list(data.tools) if data.tools is not None else known,
            tier=data.tier,
            context_tokens=data.context_tokens,
        )
        outcome = await runtime.app.agents.handle(actor_of(request), cmd, claim=claim)
        return json_bytes(_agent(outcome.state), status=201, position=outcome.position)

    async def replay(claimed: Claimed) -> Response[Any]:
        state, _, position = await result_of(request, claimed, evolve)
        return json_bytes(_agent(state), status=201, position=position)

    return await idempotent(request, run, replay)


@get("/", summary="List agents")
async def list_agents(
    request: Req, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Response[PageOf[AgentView]]:
    agents = runtime_of(request).queries.agents
    return json_bytes(await agents.page(caller_of(request).tenant_id, limit=limit, cursor=cursor))


@get("/{agent_id:str}", summary="Get an agent")
async def get_agent(request: Req, agent_id: FromPath[str]) -> Response[AgentView]:
    agents = runtime_of(request).queries.agents
    return found(await agents.agent(caller_of(request).tenant_id, agent_id), "agent")


@patch("/{agent_id:str}", summary="Change an agent", opt={"role": "admin"}, responses=errors(409))
async def update_agent(
    request: Req, agent_id: FromPath[str], data: JSONBody[UpdateAgentBody]
) -> Response[AgentView]:
    await _known_tools(request, data.tools)
    cmd = UpdateAgent(
        agent_id=checked_id(agent_id, "agent"),
        name=data.name,
        instructions=data.instructions,
        provider=data.provider,
        model=data.model,
        tools=list(data.tools) if data.tools is not None else None,
        tier=data.tier,
        context_tokens=data.context_tokens,
    )
    outcome = await runtime_of(request).app.agents.handle(actor_of(request), cmd)
    return json_bytes(_agent(outcome.state), position=outcome.position)


@delete("/{agent_id:str}", summary="Delete an agent", opt={"role": "admin"}, responses=errors(409))
async def delete_agent(request: Req, agent_id: FromPath[str]) -> Response[None]:
    cmd = DeleteAgent(agent_id=checked_id(agent_id, "agent"))
    outcome = await runtime_of(request).app.agents.handle(actor_of(request), cmd)
    return Response(None, status_code=204, headers={"X-Nome-Position": str(outcome.position)})


router = Router(
    path="/v1/agents",
    route_handlers=[create_agent, list_agents, get_agent, update_agent, delete_agent],
    tags=["agents"],
)
