"""Agent read model: documents by tenant and the list."""

from __future__ import annotations

import msgspec

from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.eventstore import Event
from projections.engine import Projection, View


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
            case AgentCreated() as c:
                agent = AgentView(
                    id=agent_id,
                    name=c.name,
                    instructions=c.instructions,
                    provider=c.provider,
                    model=c.model,
                    tools=c.tools,
                    tier=c.tier,
                    created_at=event.at,
                    updated_at=event.at,
                )
                view.set(key, _encode(agent))
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
                    )
                    view.set(key, _encode(updated))
            case AgentDeleted():
                raw = view.get(key)
                if raw is not None:
                    view.zrem(self.index(tenant), f"{_decode(raw).created_at}|{agent_id}")
                    view.delete(key)
