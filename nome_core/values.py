"""Value sets that more than one context uses, each defined once. A set that belongs to one
context lives there (run statuses in runs/state.py, receipt statuses in tools/receipts.py)."""

from __future__ import annotations

from typing import Final, Literal, get_args

# API.md §0. `platform` (the deployment's operator, §6) has no tenant of its own.
Role = Literal["viewer", "member", "operator", "auditor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

# How hard a run thinks, and so what it may cost (API.md §3, §6).
Tier = Literal["fast", "standard", "deep"]

# Model providers an agent can name (API.md §4).
Provider = Literal["scripted", "openai"]
PROVIDERS: Final[tuple[Provider, ...]] = get_args(Provider)

# The scripted provider's one model (API.md §4): offline and deterministic.
SCRIPTED_MODEL: Final = "scripted-1"
