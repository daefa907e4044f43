"""Thread and message read models.

Documents are stored as the exact JSON the API serves, so a read is one GET and no decode.
Threads are listed newest-update first from a lexicographic sorted set whose members
embed the inverted update time; a page cursor is the last member seen, so threads created
while a client pages never shift the pages after its cursor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from nome_core.events import Client, Event
from nome_core.threads.events import (
    MessageAdded,
    RunAdmitted,
    RunQueued,
    RunReleased,
    ThreadCreated,
    ThreadDeleted,
    ThreadRenamed,
)
from nome_core.threads.state import ThreadState, evolve
from projections.engine import Projection, View
from projections.paging import (
    MEMBER_CURSOR,
    decode_cursor,
    encode_cursor,
    member_id,
    page_json,
    score_page,
    tenant_page,
)

# A document read: batched into one MGET per turn of the event loop by the API.
Get = Callable[[str], Awaitable[bytes | None]]


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
            case ThreadCreated():
                created = evolve(None, event)
                assert created is not None
                self._save(view, tenant, view_of(created), None)
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


def view_of(state: ThreadState) -> ThreadView:
    """A thread as the API returns it, from its state (command answers)."""
    return ThreadView(
        id=state.id,
        title=state.title,
        metadata=state.metadata,
        created_at=state.created_at,
        updated_at=state.updated_at,
        message_count=state.message_count,
        last_run_id=state.last_run_id,
        active_run_id=state.active_run_id,
    )


class _TitleOnly(msgspec.Struct):
    title: str


class ThreadQueries:
    """Threads and messages of one tenant, as stored (API-ready JSON)."""

    def __init__(self, views: ThreadsProjection, redis: Any, get: Get) -> None:
        self.views = views
        self.redis = redis
        self.get = get

    async def thread(self, tenant_id: str, thread_id: str) -> bytes | None:
        return await self.get(self.views.doc(tenant_id, thread_id))

    async def exists(self, tenant_id: str, thread_id: str) -> bool:
        return bool(await self.redis.exists(self.views.doc(tenant_id, thread_id)))

    async def page(self, tenant_id: str, *, limit: int, cursor: str | None) -> bytes:
        """Most recently updated first."""
        return await tenant_page(self.redis, self.views, tenant_id, limit=limit, cursor=cursor)

    async def search(self, tenant_id: str, q: str, *, limit: int, cursor: str | None) -> bytes:
        """Threads whose title contains `q` (case-insensitive): walks the tenant's index in
        order, so it is linear in its threads; the count covers every match."""
        after = decode_cursor(cursor, MEMBER_CURSOR)
        needle = q.casefold()
        views, redis = self.views, self.redis
        index = views.index(tenant_id)
        found: list[bytes] = []
        last_member: str | None = None
        more = False
        total = 0
        position = "-"
        while True:
            members = await redis.zrangebylex(index, position, "+", start=0, num=500)
            if not members:
                break
            docs = await redis.mget([views.doc(tenant_id, member_id(m)) for m in members])
            for member, doc in zip(members, docs, strict=True):
                if doc is None or needle not in _decode_title(doc).title.casefold():
                    continue
                total += 1
                if after is not None and member.decode() <= after:
                    continue
                if len(found) < limit:
                    found.append(doc)
                    last_member = member.decode()
                else:
                    more = True
            position = f"({members[-1].decode()}"
        return page_json(found, encode_cursor(last_member) if more and last_member else None, total)

    async def messages(
        self, tenant_id: str, thread_id: str, *, limit: int, cursor: str | None
    ) -> bytes | None:
        """A thread's messages, oldest first; None when there is no such thread."""
        views, redis = self.views, self.redis
        if not await self.exists(tenant_id, thread_id):
            return None
        bodies = views.messages(tenant_id, thread_id)

        async def docs(ids: list[bytes]) -> list[bytes | None]:
            return await redis.hmget(bodies, ids)  # type: ignore[no-any-return]

        return await score_page(
            redis,
            views.message_order(tenant_id, thread_id),
            limit=limit,
            cursor=cursor,
            docs=docs,
        )


_decode_title = msgspec.json.Decoder(_TitleOnly).decode
