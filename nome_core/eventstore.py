"""msgspec <-> eventsourcing glue: event base, the permanent stored format, hash chain, store.

We use the library's recorders (Postgres and SQLite tables, the global notification sequence,
the table lock that keeps positions in commit order) but not `Application.save`: the
group-commit writer (nome_core/writer.py) hands many commands' events to one
`insert_events` call, and our aggregates are pure `decide`/`evolve` functions, not objects.

The stored format is permanent. Each row's `topic` is the event type (`thread.created`), which
is independent of where a class lives in Python, and its `state` is the msgspec JSON of
`Stored`: the API envelope (minus `position`, which the database assigns) plus metadata and
the hash chain. JSON rather than msgpack because tool arguments may carry integers beyond 64
bits and because an operator can read a row with `psql`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit
from uuid import UUID

import msgspec
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    StoredEvent,
)
from eventsourcing.utils import Environment

from nome_core.clock import Clock
from nome_core.errors import StreamConflict


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
_payload_decoders: dict[str, msgspec.json.Decoder[Any]] = {}


def canonical_json(value: Any) -> bytes:
    """The canonical encoding of API.md §3: sorted keys, no whitespace, UTF-8 kept as is.

    The stdlib encoder on purpose: an auditor recomputes hashes with it, and its float and
    escape rendering is what they will get.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def chain_hash(prev_hash: str | None, content: dict[str, Any]) -> str:
    """`sha256:` + SHA-256 of `prev_hash` (empty for a stream's first event), newline, content."""
    digest = hashlib.sha256((prev_hash or "").encode() + b"\n" + canonical_json(content))
    return "sha256:" + digest.hexdigest()


class Head(NamedTuple):
    """Where a stream stands: its last seq and the hash of its last event."""

    version: int = 0
    last_hash: str | None = None


class Draft(NamedTuple):
    """A decided payload that belongs to a work item (a model turn or a tool call)."""

    data: DomainEvent
    work_item_id: str | None = None


def seal(
    drafts: Sequence[DomainEvent | Draft],
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


def decode_payload(type_name: str, raw: bytes | msgspec.Raw) -> DomainEvent:
    decoder = _payload_decoders.get(type_name)
    if decoder is None:
        decoder = _payload_decoders[type_name] = msgspec.json.Decoder(EVENT_TYPES[type_name])
    return decoder.decode(raw)  # type: ignore[no-any-return]


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


def event_envelope_json(event: Event) -> bytes:
    """The envelope of a recorded event, through the stored format it was written in."""
    assert event.position is not None
    return envelope_json(decode_stored(to_stored(event).state), event.position)


class Row(NamedTuple):
    """One row of the global log."""

    position: int
    type: str
    state: bytes


def database_environment(url: str, *, schema: str | None = None) -> dict[str, str]:
    """eventsourcing settings for a `NOME_DATABASE_URL`."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parts.path
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path or ":memory:",
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": schema or "",
            "POSTGRES_POOL_SIZE": "8",
            "POSTGRES_MAX_OVERFLOW": "8",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            # A stuck lock should surface as an error, not hang every writer forever.
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            # The library's recorder, inserting rows as column arrays (nome_core/pgrecorder.py).
            "APPLICATION_RECORDER_TOPIC": "nome_core.pgrecorder:ColumnArrayRecorder",
        }
    raise ValueError(f"unsupported NOME_DATABASE_URL scheme {parts.scheme!r}")


class EventStore:
    """The global, append-only log: read streams and positions, insert sealed events."""

    name = "nome"

    def __init__(self, url: str, *, schema: str | None = None, create_table: bool = True) -> None:
        self.url = url
        self.schema = schema
        env = database_environment(url, schema=schema)
        self.is_postgres = env["PERSISTENCE_MODULE"].endswith("postgres")
        # Tables are created below, after the schema they live in.
        env["CREATE_TABLE"] = "n"
        self.factory = InfrastructureFactory.construct(Environment(self.name, env))
        self.recorder: ApplicationRecorder = self.factory.application_recorder()
        if create_table:
            self.migrate()

    def migrate(self) -> None:
        """Create the schema (Postgres) and the events table, if missing. Idempotent."""
        if self.is_postgres and self.schema:
            with self.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
                cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        self.recorder.create_table()  # type: ignore[attr-defined]

    def drop(self) -> None:
        """Drop this store's schema (tests and benchmarks use one schema per run)."""
        assert self.is_postgres and self.schema, "only a dedicated Postgres schema is dropped"
        with self.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    @property
    def table(self) -> str:
        return str(self.recorder.events_table_name)  # type: ignore[attr-defined]

    @property
    def _qualified(self) -> str:
        return f'"{self.schema or "public"}"."{self.table}"'

    @property
    def channel(self) -> str:
        """The NOTIFY channel the Postgres recorder signals on every insert."""
        return str(self.recorder.channel_name)  # type: ignore[attr-defined]

    def insert(self, events: Sequence[Event]) -> list[int]:
        """Insert events in one transaction; returns their positions. Raises StreamConflict."""
        try:
            ids = self.recorder.insert_events([to_stored(e) for e in events])
        except IntegrityError as exc:
            raise StreamConflict("the stream was changed by another writer") from exc
        assert ids is not None
        return list(ids)

    def load(self, stream_id: str, *, after: int = 0, upto: int | None = None) -> list[Event]:
        rows = self.recorder.select_events(UUID(stream_id), gt=after or None, lte=upto)
        return [to_event(r.state) for r in rows]

    def stream_rows(self, stream_id: str, *, after: int = 0) -> list[Row]:
        """A stream's rows after seq `after`, with their global positions (for envelopes).

        The recorder's `select_events` does not return positions, hence this one query.
        """
        if self.is_postgres:
            sql = (
                f"SELECT notification_id, topic, state FROM {self._qualified} "  # noqa: S608
                "WHERE originator_id = %s AND originator_version > %s "
                "ORDER BY originator_version"
            )
            return self._pg_rows(sql, (UUID(stream_id), after))
        sql = (
            f"SELECT rowid, topic, state FROM {self.table} "  # noqa: S608
            "WHERE originator_id = ? AND originator_version > ? ORDER BY originator_version"
        )
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, (UUID(stream_id).hex, after))
            return [Row(r["rowid"], r["topic"], bytes(r["state"])) for r in cursor.fetchall()]

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read(self, after: int, limit: int, *, upto: int | None = None) -> list[Row]:
        """Rows of the global log with position in (after, upto], oldest first, at most
        `limit`; fewer only when they reach `upto` (default: the head now).

        `upto` must be a head read earlier: positions commit in order (the recorder's table
        lock), so every position up to it is final and a missing one is a rolled-back gap.

        Its own query rather than the recorder's `select_notifications`, which also selects
        and converts the originator columns that nothing here needs (catch-up and export
        read every row of the log through this). Each query covers a window of `limit`
        positions: it can match at most `limit` rows whatever plan Postgres picks. Open
        ended, a planner whose statistics lag a burst of appends (right after a bulk load,
        in a rebuild) bitmap-scans and sorts the whole rest of the log for every page.
        """
        if upto is None:
            upto = self.head()
        rows: list[Row] = []
        while len(rows) < limit and after < upto:
            upper, wanted = min(upto, after + limit), limit - len(rows)
            page = self._window(after, upper, wanted)
            rows += page
            # A full page may stop inside the window; a short one covered all of it.
            after = page[-1].position if len(page) == wanted else upper
        return rows

    def _window(self, after: int, upper: int, limit: int) -> list[Row]:
        if self.is_postgres:
            sql = (
                f"SELECT notification_id, topic, state FROM {self._qualified} "  # noqa: S608
                "WHERE notification_id > %s AND notification_id <= %s "
                "ORDER BY notification_id LIMIT %s"
            )
            return self._pg_rows(sql, (after, upper, limit))
        sql = (
            f"SELECT rowid, topic, state FROM {self.table} "  # noqa: S608
            "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        )
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, (after, upper, limit))
            return [Row(r["rowid"], r["topic"], bytes(r["state"])) for r in cursor.fetchall()]

    def _pg_rows(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """Rows in binary: `state` arrives as bytes, not as hex text to decode (1.5x faster
        for a page of the log); straight into `Row`s, not the recorder's dict per row."""
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.row_factory = _log_rows
            cursor.execute(sql, params, binary=True)
            return cursor.fetchall()  # type: ignore[no-any-return]

    def scan(self, after: int = 0, *, upto: int | None = None, page: int = 1000) -> Iterator[Row]:
        """Every row after a position up to `upto` (default: the head now), in pages, so
        memory stays constant on a long log."""
        if upto is None:
            upto = self.head()
        while True:
            rows = self.read(after, page, upto=upto)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].position

    def close(self) -> None:
        self.factory.close()


def _log_rows(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    """psycopg's row factory protocol: each row of a log query straight into a `Row`."""
    return Row._make
