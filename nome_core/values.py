"""Value sets that more than one context uses, each defined once. A set that belongs to one
context lives there (run statuses in runs/state.py, receipt statuses in tools/receipts.py)."""

from __future__ import annotations

import uuid
from typing import Final, Literal, get_args

# The roles of a tenant's keys (API.md §0).
Role = Literal["viewer", "member", "operator", "auditor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

# The operator of the whole deployment (API.md §6): a key of its own, in no customer
# tenant, that none of the tenant roles include and that includes none of them.
PLATFORM_ROLE: Final = "platform"
# Where the platform's keys live: no customer tenant's id (those derive from their names in
# another namespace, nome_core/tenants/state.py).
PLATFORM_TENANT_ID: Final = str(
    uuid.uuid5(uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650007"), "platform")
)

# How hard a run thinks, and so what it may cost (API.md §3, §6).
Tier = Literal["fast", "standard", "deep"]

# Model providers an agent can name (API.md §4).
Provider = Literal["scripted", "openai"]
PROVIDERS: Final[tuple[Provider, ...]] = get_args(Provider)

# The scripted provider's one model (API.md §4): offline and deterministic.
SCRIPTED_MODEL: Final = "scripted-1"
