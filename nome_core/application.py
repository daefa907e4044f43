"""The application: every context's handlers over one command bus, composed here.

A route or job names the context it acts on (`app.threads.handle(actor, RenameThread(...))`,
`app.runs.create(actor, CreateRun(...))`); the one cross-context use case that has no
single home, answering an approval, picks the stream that holds the call.
"""

from __future__ import annotations

from typing import Any

from nome_core.accounts.handlers import AccountHandlers, TenantHandlers, ThreadHandlers
from nome_core.agents.handlers import AgentHandlers
from nome_core.approvals.commands import ResolveApproval
from nome_core.bus import Actor, CommandBus, Outcome, Store, Writer
from nome_core.calls.handlers import CallHandlers
from nome_core.clock import Clock
from nome_core.keys.handlers import KeyHandlers
from nome_core.marketplace.handlers import MarketplaceHandlers
from nome_core.runs.handlers import RunHandlers
from nome_core.tools.executor import Executor
from nome_core.tools.handlers import ToolHandlers
from nome_core.tools.registry import ToolRegistry
from nome_core.values import Provider

__all__ = ["Actor", "Application", "Outcome"]


class Application:
    """Every NOME command, as load -> decide -> append, per context."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        clock: Clock,
        *,
        registry: ToolRegistry,
        executor: Executor,
        default_provider: Provider = "scripted",
        approval_ttl_s: float = 3600.0,
        billing_grace_days: float = 7.0,
    ) -> None:
        self.bus = bus = CommandBus(store, writer, clock)
        self.clock = clock
        self.tenants = TenantHandlers(bus)
        self.accounts = AccountHandlers(bus)
        self.keys = KeyHandlers(bus)
        self.threads = ThreadHandlers(bus)
        self.agents = AgentHandlers(bus, default_provider)
        self.tools = ToolHandlers(bus, registry, executor)
        self.runs = RunHandlers(bus, self.agents, billing_grace_days=billing_grace_days)
        self.calls = CallHandlers(bus, self.tools, approval_ttl_s=approval_ttl_s)
        self.marketplace = MarketplaceHandlers(bus, billing_grace_days)

    def new_id(self) -> str:
        return self.clock.new_id()

    async def resolve_approval(self, actor: Actor, cmd: ResolveApproval) -> Outcome[Any]:
        """A run's call waits for its worker to pick the run up again; a direct call runs
        at once, in this request."""
        if cmd.run_id is not None:
            return await self.runs.resolve(actor, cmd)
        return await self.calls.resolve(actor, cmd)
