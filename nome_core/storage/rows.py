"""The stored row format: how an event is written to and read back from the log.

The stored format is permanent. Each row's `topic` is the event type (`thread.created`) and
its `state` is the msgspec JSON of `Stored`: the API envelope (minus `position`, which the
database assigns) plus metadata and the hash chain. JSON rather than msgpack because tool
arguments may carry integers beyond 64 bits and because an operator can read a row with
`psql`.
"""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from nome_core.events import Event, Meta, decode_payload


class Row(NamedTuple):
    """One row of the global log."""

    position: int
    type: str
    state: bytes


class Sealed(msgspec.Struct, frozen=True, kw_only=True):
    """A stored row as far as its envelope goes: everything but `meta`. Decoding skips
    `meta` and its nested structs, under half the cost of decoding the whole `Stored`
    (exports, replays and streams decode every row they send)."""

    id: str
    type: str
    tenant_id: str
    stream_id: str
    thread_id: str | None
    run_id: str | None
    work_item_id: str | None
    seq: int
    at: str
    data: msgspec.Raw
    hash: str
    prev_hash: str | None


class Stored(Sealed, frozen=True, kw_only=True):
    """The permanent row format (`state` column): the sealed fields, then `meta`, in this
    order. `data` stays raw JSON until someone needs it."""

    meta: Meta


class Receipt(msgspec.Struct, frozen=True):
    hash: str
    prev_hash: str | None


class Envelope(msgspec.Struct, frozen=True):
    """The API envelope (API.md §3), field order as documented."""

    id: str
    type: str
    tenant_id: str
    stream_id: str
    thread_id: str | None
    run_id: str | None
    work_item_id: str | None
    seq: int
    position: int
    at: str
    data: msgspec.Raw
    receipt: Receipt


class TenantOnly(msgspec.Struct):
    """Decodes just the tenant of a stored row: tenant filters skip the rest of the JSON."""

    tenant_id: str


_stored_decoder = msgspec.json.Decoder(Stored)
_sealed_decoder = msgspec.json.Decoder(Sealed)
_tenant_decoder = msgspec.json.Decoder(TenantOnly)
_encoder = msgspec.json.Encoder()


def to_stored(event: Event) -> StoredEvent:
    stored = Stored(
        id=event.id,
        type=event.type,
        tenant_id=event.tenant_id,
        stream_id=event.stream_id,
        thread_id=event.thread_id,
        run_id=event.run_id,
        work_item_id=event.work_item_id,
        seq=event.seq,
        at=event.at,
        data=msgspec.Raw(_encoder.encode(event.data)),
        hash=event.hash,
        prev_hash=event.prev_hash,
        meta=event.meta,
    )
    return StoredEvent(
        originator_id=UUID(event.stream_id),
        originator_version=event.seq,
        topic=event.type,
        state=_encoder.encode(stored),
    )


def decode_stored(state: bytes) -> Stored:
    return _stored_decoder.decode(state)


def decode_sealed(state: bytes) -> Sealed:
    return _sealed_decoder.decode(state)


def tenant_of(state: bytes) -> str:
    return _tenant_decoder.decode(state).tenant_id


def to_event(state: bytes, position: int | None = None) -> Event:
    s = decode_stored(state)
    return Event(
        id=s.id,
        type=s.type,
        tenant_id=s.tenant_id,
        stream_id=s.stream_id,
        thread_id=s.thread_id,
        run_id=s.run_id,
        work_item_id=s.work_item_id,
        seq=s.seq,
        at=s.at,
        data=decode_payload(s.type, s.data),
        hash=s.hash,
        prev_hash=s.prev_hash,
        meta=s.meta,
        position=position,
    )


def to_envelope(stored: Sealed, position: int) -> Envelope:
    return Envelope(
        id=stored.id,
        type=stored.type,
        tenant_id=stored.tenant_id,
        stream_id=stored.stream_id,
        thread_id=stored.thread_id,
        run_id=stored.run_id,
        work_item_id=stored.work_item_id,
        seq=stored.seq,
        position=position,
        at=stored.at,
        data=stored.data,
        receipt=Receipt(stored.hash, stored.prev_hash),
    )


def envelope_json(stored: Sealed, position: int) -> bytes:
    return _encoder.encode(to_envelope(stored, position))


def row_envelope(row: Row) -> bytes:
    """The envelope JSON of a row of the log."""
    return envelope_json(decode_sealed(row.state), row.position)
