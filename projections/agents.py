"""Agent read model: documents by tenant and the list."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.agents.state import DEFAULT_CONTEXT_TOKENS, AgentState, evolve
from nome_core.events import Event
from projections.engine import Projection, View
from projections.paging import tenant_page
from projections.threads import Get


class AgentView(msgspec.Struct, kw_only=True):
    """An agent as the API returns it."""

    id: str
    name: str
    instructions: str
    provider: str
    model: str
    tools: list[str]
    tier: str
    created_at: str
    updated_at: str
    # The budget of the conversation its runs send the model, in tokens (words).
    context_tokens: int = DEFAULT_CONTEXT_TOKENS


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AgentView).decode


class AgentsProjection(Projection):
    name = "agents"
    types = frozenset({AgentCreated.type, AgentUpdated.type, AgentDeleted.type})

    def doc(self, tenant_id: str, agent_id: str) -> str:
        return self.key("doc", tenant_id, agent_id)

    def index(self, tenant_id: str) -> str:
        return self.key("idx", tenant_id)

    def apply(self, event: Event, view: View) -> None:
        tenant, agent_id = event.tenant_id, event.stream_id
        key = self.doc(tenant, agent_id)
        match event.data:
            case AgentCreated():
                created = evolve(None, event)
                assert created is not None
                view.set(key, _encode(view_of(created)))
                view.zadd(self.index(tenant), 0, f"{event.at}|{agent_id}")
            case AgentUpdated() as u:
                raw = view.get(key)
                if raw is not None:
                    updated = msgspec.structs.replace(
                        _decode(raw),
                        name=u.name,
                        instructions=u.instructions,
                        provider=u.provider,
                        model=u.model,
                        tools=u.tools,
                        tier=u.tier,
                        updated_at=event.at,
                        context_tokens=u.context_tokens or DEFAULT_CONTEXT_TOKENS,
                    )
                    view.set(key, _encode(updated))
            case AgentDeleted():
                raw = view.get(key)
                if raw is not None:
                    view.zrem(self.index(tenant), f"{_decode(raw).created_at}|{agent_id}")
                    view.delete(key)


def view_of(state: AgentState) -> AgentView:
    """An agent as the API returns it, from its state (command answers)."""
    return AgentView(
        id=state.id,
        name=state.name,
        instructions=state.instructions,
        provider=state.provider,
        model=state.model,
        tools=state.tools,
        tier=state.tier,
        created_at=state.created_at,
        updated_at=state.updated_at,
        context_tokens=state.context_tokens or DEFAULT_CONTEXT_TOKENS,
    )


class AgentQueries:
    def __init__(self, views: AgentsProjection, redis: Any, get: Get) -> None:
        self.views = views
        self.redis = redis
        self.get = get

    async def agent(self, tenant_id: str, agent_id: str) -> bytes | None:
        return await self.get(self.views.doc(tenant_id, agent_id))

    async def page(self, tenant_id: str, *, limit: int, cursor: str | None) -> bytes:
        return await tenant_page(self.redis, self.views, tenant_id, limit=limit, cursor=cursor)
