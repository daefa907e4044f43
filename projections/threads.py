"""Thread and message read models.

Documents are stored as the exact JSON the API serves, so a read is one GET and no decode.
Threads are listed newest-update first from a lexicographic sorted set whose members
embed the inverted update time; a page cursor is the last member seen, so threads created
while a client pages never shift the pages after its cursor.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.eventstore import Client, Event
from nome_core.threads.events import (
    MessageAdded,
    RunAdmitted,
    RunQueued,
    RunReleased,
    ThreadCreated,
    ThreadDeleted,
    ThreadRenamed,
)
from projections.engine import Projection, View


class ThreadView(msgspec.Struct, kw_only=True):
    """A thread as the API returns it."""

    id: str
    title: str
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    message_count: int = 0
    last_run_id: str | None = None
    active_run_id: str | None = None


class MessageMetadata(msgspec.Struct, kw_only=True):
    domain_hints: list[str] = []
    tier: str | None = None
    tools_invoked: list[str] = []
    episode_id: str | None = None
    client: Client | None = None


RESERVED_METADATA = frozenset(MessageMetadata.__struct_fields__)


class MessageView(msgspec.Struct, kw_only=True):
    """A message as the API returns it."""

    id: str
    thread_id: str
    role: str
    content: str
    created_at: str
    metadata: dict[str, Any]


_encode = msgspec.json.Encoder().encode
_decode_thread = msgspec.json.Decoder(ThreadView).decode


# Every time on the wire has one fixed-width format, so swapping each digit d for 9 - d
# turns "later" into "sorts first" without parsing a date (rebuilds do this per event).
_NEWEST_FIRST = str.maketrans("0123456789", "9876543210")


def order_member(updated_at: str, thread_id: str) -> str:
    """Sorts most recently updated first, ties by id."""
    return f"{updated_at.translate(_NEWEST_FIRST)}|{thread_id}"


def message_view(event: Event, added: MessageAdded) -> MessageView:
    metadata = msgspec.to_builtins(
        MessageMetadata(
            domain_hints=added.domain_hints,
            tier=added.tier,
            tools_invoked=added.tools_invoked,
            episode_id=added.episode_id,
            client=added.client,
        )
    )
    return MessageView(
        id=added.message_id,
        thread_id=event.stream_id,
        role=added.role,
        content=added.content,
        created_at=event.at,
        metadata={**added.attributes, **metadata},
    )


class ThreadsProjection(Projection):
    """Threads by tenant, and each thread's messages."""

    name = "threads"
    types = frozenset(
        {
            ThreadCreated.type,
            ThreadRenamed.type,
            ThreadDeleted.type,
            MessageAdded.type,
            RunAdmitted.type,
            RunQueued.type,
            RunReleased.type,
        }
    )

    def doc(self, tenant_id: str, thread_id: str) -> str:
        return self.key("doc", tenant_id, thread_id)

    def index(self, tenant_id: str) -> str:
        return self.key("idx", tenant_id)

    def messages(self, tenant_id: str, thread_id: str) -> str:
        return self.key("msg", tenant_id, thread_id)

    def message_order(self, tenant_id: str, thread_id: str) -> str:
        return self.key("msgs", tenant_id, thread_id)

    def apply(self, event: Event, view: View) -> None:
        tenant, thread_id = event.tenant_id, event.stream_id
        doc_key = self.doc(tenant, thread_id)
        match event.data:
            case ThreadCreated(title=title, metadata=metadata):
                thread = ThreadView(
                    id=thread_id,
                    title=title,
                    metadata=metadata,
                    created_at=event.at,
                    updated_at=event.at,
                )
                self._save(view, tenant, thread, None)
            case ThreadDeleted():
                raw = view.get(doc_key)
                if raw is not None:
                    old = _decode_thread(raw)
                    view.zrem(self.index(tenant), order_member(old.updated_at, thread_id))
                view.delete(
                    doc_key, self.messages(tenant, thread_id), self.message_order(tenant, thread_id)
                )
            case ThreadRenamed(title=title):
                self._update(view, event, title=title)
            case RunAdmitted(run_id=run_id):
                self._update(view, event, active_run_id=run_id, last_run_id=run_id)
            case RunQueued():
                self._update(view, event)
            case RunReleased(run_id=run_id):
                raw = view.get(doc_key)
                active = _decode_thread(raw).active_run_id if raw else None
                self._update(view, event, active_run_id=None if active == run_id else active)
            case MessageAdded() as added:
                if self._update(view, event, message_delta=1):
                    message = message_view(event, added)
                    view.hset(self.messages(tenant, thread_id), added.message_id, _encode(message))
                    view.zadd(self.message_order(tenant, thread_id), event.seq, added.message_id)

    def _update(self, view: View, event: Event, *, message_delta: int = 0, **changes: Any) -> bool:
        raw = view.get(self.doc(event.tenant_id, event.stream_id))
        if raw is None:
            return False  # deleted: the tombstone keeps it out of every read model
        old = _decode_thread(raw)
        thread = msgspec.structs.replace(
            old,
            updated_at=event.at,
            message_count=old.message_count + message_delta,
            **changes,
        )
        self._save(view, event.tenant_id, thread, old)
        return True

    def _save(self, view: View, tenant: str, thread: ThreadView, old: ThreadView | None) -> None:
        if old is not None:
            view.zrem(self.index(tenant), order_member(old.updated_at, old.id))
        view.set(self.doc(tenant, thread.id), _encode(thread))
        view.zadd(self.index(tenant), 0, order_member(thread.updated_at, thread.id))
