"""Tool policy commands."""

from __future__ import annotations

from nome_core.bus import Command
from nome_core.tools.policy import Policy


class SetPolicy(Command, frozen=True, kw_only=True):
    """Replace a tenant's policy of one tool (its `version` is ignored: changes count)."""

    tenant_id: str
    policy: Policy
    # Whether the tool is dangerous: its default policy (version 1) depends on it.
    dangerous: bool


ToolCommand = SetPolicy
