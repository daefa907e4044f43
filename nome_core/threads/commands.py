"""Thread commands: what a client can ask of a thread."""

from __future__ import annotations

from typing import Literal

from nome_core.bus import Command
from nome_core.events import Client


class CreateThread(Command, frozen=True, kw_only=True):
    thread_id: str
    title: str
    metadata: dict[str, str]


class RenameThread(Command, frozen=True, kw_only=True):
    thread_id: str
    title: str


class DeleteThread(Command, frozen=True, kw_only=True):
    thread_id: str


# Assistant and tool messages come only from runs.
ClientRole = Literal["user", "system"]


class AddMessage(Command, frozen=True, kw_only=True):
    """A message from a client."""

    thread_id: str
    message_id: str
    role: ClientRole
    content: str
    attributes: dict[str, str]
    client: Client | None = None


ThreadCommand = CreateThread | RenameThread | DeleteThread | AddMessage
