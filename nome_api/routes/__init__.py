"""HTTP routes, one module per context; each module exports `router`. A new context's
routes are one more line here."""

from __future__ import annotations

from litestar import Router

from nome_api.routes import (
    account,
    admin,
    agents,
    approvals,
    audit,
    bootstrap,
    chat,
    completions,
    console,
    events,
    health,
    marketplace,
    mcp,
    platform,
    runs,
    threads,
    tools,
)

# Served by every process role: a projector or worker answers its own health.
ALWAYS: list[Router] = [health.router]

# Served by the `api` role.
API: list[Router] = [
    bootstrap.router,
    account.router,
    platform.router,
    admin.router,
    threads.router,
    agents.router,
    runs.router,
    chat.router,
    completions.router,
    events.router,
    tools.router,
    mcp.router,
    marketplace.router,
    approvals.router,
    audit.router,
    console.router,
]
