"""The event base every context builds on: payloads, the recorded event, sealing and the hash
chain of API.md §3. Pure: the standard library and msgspec only, so a context's events,
states and decisions never depend on how or where they are stored (nome_core/storage).

Each payload class is pinned to a stored type name (`thread.created`) that is independent of
where the class lives in Python: the name is part of the audit format, the class path is not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec

from nome_core.clock import Clock


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event payload (the envelope's `data`). Subclasses register a type name."""

    type: ClassVar[str]


EVENT_TYPES: dict[str, type[DomainEvent]] = {}

E = TypeVar("E", bound=type[DomainEvent])


def event_type(name: str) -> Callable[[E], E]:
    """Pin a payload class to its stored type name; the name, not the class path, is stored."""

    def register(cls: E) -> E:
        if name in EVENT_TYPES:
            raise ValueError(f"event type {name!r} registered twice")
        cls.type = name
        EVENT_TYPES[name] = cls
        return cls

    return register


class Client(msgspec.Struct, frozen=True, kw_only=True):
    """Build identity of the app that sent the request (X-Nome-Client-* headers)."""

    surface: str | None = None
    version: str | None = None
    revision: str | None = None


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """Who and what caused an event. Stored with it; not part of the hashed envelope."""

    principal: str | None = None
    client: Client = Client()
    request_id: str | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded event with its typed payload, as the domain folds it."""

    id: str
    type: str
    tenant_id: str
    stream_id: str
    thread_id: str | None
    run_id: str | None
    work_item_id: str | None
    seq: int
    at: str
    data: DomainEvent
    hash: str
    prev_hash: str | None
    meta: Meta
    position: int | None = None


_payload_decoders: dict[str, msgspec.json.Decoder[Any]] = {}


def decode_payload(type_name: str, raw: bytes | msgspec.Raw) -> DomainEvent:
    """A stored payload back into its pinned class."""
    decoder = _payload_decoders.get(type_name)
    if decoder is None:
        decoder = _payload_decoders[type_name] = msgspec.json.Decoder(EVENT_TYPES[type_name])
    return decoder.decode(raw)  # type: ignore[no-any-return]


def canonical_json(value: Any) -> bytes:
    """The canonical encoding of API.md §3: sorted keys, no whitespace, UTF-8 kept as is.

    The stdlib encoder on purpose: an auditor recomputes hashes with it, and its float and
    escape rendering is what they will get. nome_core/audit.py verifies with this too.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


HASH_PREFIX = "sha256:"


def chain_hash(prev_hash: str | None, content: dict[str, Any]) -> str:
    """`sha256:` + SHA-256 of `prev_hash` (empty for a stream's first event), newline, content."""
    digest = hashlib.sha256((prev_hash or "").encode() + b"\n" + canonical_json(content))
    return HASH_PREFIX + digest.hexdigest()


class Head(NamedTuple):
    """Where a stream stands: its last seq and the hash of its last event."""

    version: int = 0
    last_hash: str | None = None


class Draft(NamedTuple):
    """A decided payload that belongs to a work item (a model turn or a tool call)."""

    data: DomainEvent
    work_item_id: str | None = None


Decided = DomainEvent | Draft


def payload(draft: Decided) -> DomainEvent:
    """The payload of a decided event, with or without its work item."""
    return draft.data if isinstance(draft, Draft) else draft


def seal(
    drafts: Sequence[Decided],
    *,
    stream_id: str,
    head: Head,
    tenant_id: str,
    thread_id: str | None,
    run_id: str | None,
    meta: Meta,
    clock: Clock,
) -> list[Event]:
    """Number, time-stamp and chain new payloads onto a stream."""
    events: list[Event] = []
    seq, prev = head
    for draft in drafts:
        data, work_item_id = draft if isinstance(draft, Draft) else (draft, None)
        seq += 1
        event_id, at = clock.new_id(), clock.now()
        content = {
            "id": event_id,
            "type": data.type,
            "tenant_id": tenant_id,
            "stream_id": stream_id,
            "thread_id": thread_id,
            "run_id": run_id,
            "work_item_id": work_item_id,
            "seq": seq,
            "at": at,
            "data": msgspec.to_builtins(data),
        }
        digest = chain_hash(prev, content)
        events.append(
            Event(
                id=event_id,
                type=data.type,
                tenant_id=tenant_id,
                stream_id=stream_id,
                thread_id=thread_id,
                run_id=run_id,
                work_item_id=work_item_id,
                seq=seq,
                at=at,
                data=data,
                hash=digest,
                prev_hash=prev,
                meta=meta,
            )
        )
        prev = digest
    return events


def head_of(events: Sequence[Event], start: Head | None = None) -> Head:
    return Head(events[-1].seq, events[-1].hash) if events else (start or Head())


def unrecorded(draft: Decided) -> Event:
    """A decided payload as an event not yet sealed, to fold ahead of appending it (for a
    decision that depends on what the same command decides first). No ids, seq or time are
    read from it by any `evolve`."""
    data, work_item = (
        (draft.data, draft.work_item_id) if isinstance(draft, Draft) else (draft, None)
    )
    return Event(
        id="",
        type=data.type,
        tenant_id="",
        stream_id="",
        thread_id=None,
        run_id=None,
        work_item_id=work_item,
        seq=0,
        at="",
        data=data,
        hash="",
        prev_hash=None,
        meta=Meta(),
    )
