"""Every read model, in one list (the runner, the rebuild command and the API use it), and
the queries over them."""

from __future__ import annotations

from typing import Any

from projections.accounts import AccountQueries, AccountsProjection
from projections.agents import AgentQueries, AgentsProjection
from projections.approvals import ApprovalQueries, ApprovalsProjection
from projections.engine import Projection
from projections.keys import KeyQueries, KeysProjection
from projections.marketplace import MarketplaceProjection, MarketplaceQueries
from projections.runs import RunQueries, RunsProjection
from projections.tenants import TenantQueries, TenantsProjection
from projections.threads import Get, ThreadQueries, ThreadsProjection
from projections.tools import Registry, ToolQueries, ToolsProjection
from projections.tracking import Tracking


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
        self.accounts = AccountsProjection(prefix)
        self.marketplace = MarketplaceProjection(prefix)
        self.tracking = Tracking(prefix, [p.name for p in self.all])

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
            self.accounts,
            self.marketplace,
        ]

    def named(self, name: str) -> Projection | None:
        return next((p for p in self.all if p.name == name), None)


class Queries:
    """Every read model's queries over one async Redis client; `get` is its batched GET."""

    def __init__(self, models: ReadModels, redis: Any, get: Get) -> None:
        self.tracking = models.tracking
        self.tenants = TenantQueries(models.tenants, redis)
        self.keys = KeyQueries(models.keys, redis)
        self.threads = ThreadQueries(models.threads, redis, get)
        self.runs = RunQueries(models.runs, redis, get)
        self.agents = AgentQueries(models.agents, redis, get)
        self.approvals = ApprovalQueries(models.approvals, redis, get)
        self.tools = ToolQueries(models.tools, redis, get)
        self.accounts = AccountQueries(models.accounts, redis)
        self.marketplace = MarketplaceQueries(models.marketplace, redis)
        self.registry = Registry(models.tools, redis)
