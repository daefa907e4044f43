"""Every read model, in one list: the runner, the rebuild command and the API use this."""

from __future__ import annotations

from projections.agents import AgentsProjection
from projections.approvals import ApprovalsProjection
from projections.engine import Projection
from projections.keys import KeysProjection
from projections.runs import RunsProjection
from projections.tenants import TenantsProjection
from projections.threads import ThreadsProjection
from projections.tools import ToolsProjection


class ReadModels:
    """The projections of one deployment (one Redis key prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tenants = TenantsProjection(prefix)
        self.keys = KeysProjection(prefix)
        self.threads = ThreadsProjection(prefix)
        self.runs = RunsProjection(prefix)
        self.agents = AgentsProjection(prefix)
        self.approvals = ApprovalsProjection(prefix)
        self.tools = ToolsProjection(prefix)

    @property
    def all(self) -> list[Projection]:
        return [
            self.tenants,
            self.keys,
            self.threads,
            self.runs,
            self.agents,
            self.approvals,
            self.tools,
        ]

    def named(self, name: str) -> Projection | None:
        return next((p for p in self.all if p.name == name), None)
