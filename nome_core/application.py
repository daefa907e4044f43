"""Every NOME command, one class per context, composed into the application."""

from __future__ import annotations

from nome_core.agents.commands import AgentCommands
from nome_core.approvals.commands import ApprovalCommands
from nome_core.commands import Actor, Outcome, Spec
from nome_core.keys.commands import KeyCommands
from nome_core.runs.commands import RunCommands
from nome_core.tenants.commands import TenantCommands
from nome_core.threads.commands import ThreadCommands
from nome_core.tools.commands import ToolCommands

__all__ = ["Actor", "Application", "Outcome", "Spec"]


class Application(
    TenantCommands,
    KeyCommands,
    ThreadCommands,
    AgentCommands,
    RunCommands,
    ToolCommands,
    ApprovalCommands,
):
    """Every NOME command, as load -> decide -> append."""
