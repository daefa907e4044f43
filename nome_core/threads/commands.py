"""Thread commands: what a client can ask of a thread."""

from __future__ import annotations

from typing import Literal

import msgspec

from nome_core.bus import Command
from nome_core.events import Client

# The roles of a conversation carried into a new thread from elsewhere: what the assistant
# said there is history too (API.md §10's earlier messages), though no run of this thread
# said it.
HistoryRole = Literal["user", "system", "assistant"]


class HistoryMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    role: HistoryRole
    content: str


class CreateThread(Command, frozen=True, kw_only=True):
    thread_id: str
    title: str
    metadata: dict[str, str]
    # Messages the thread starts with, in the commit that makes it.
    history: tuple[HistoryMessage, ...] = ()
    client: Client | None = None


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
