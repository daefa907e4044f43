"""The global, append-only log on eventsourcing's recorders (PostgreSQL, or SQLite for the
embedded default).

We use the library's recorders (tables, the global notification sequence, the table lock that
keeps positions in commit order) but not `Application.save`: the group-commit writer
(storage/writer.py) hands many commands' events to one `insert_events` call, and our
aggregates are pure `decide`/`evolve` functions, not objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
)
from eventsourcing.utils import Environment
from psycopg.rows import tuple_row

from nome_core.bus import Claimed, ClaimRow, ClaimTaken
from nome_core.errors import StreamConflict
from nome_core.events import Event
from nome_core.storage.claims import CLAIM_TTL_S, claims_table, is_claim_violation
from nome_core.storage.rows import Row, to_event, to_stored

CHECKOUT_TIMEOUT_S = 2
# libpq settings of every connection: connecting gives up after 2 s; a statement (or a lock
# wait) after 5 s; a peer that stops answering is noticed in about 5 s.
CONNECTION_OPTIONS: dict[str, object] = {
    "connect_timeout": 2,
    "options": "-c statement_timeout=5000",
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}


def database_environment(url: str, *, schema: str | None = None) -> dict[str, str]:
    """eventsourcing settings for a `NOME_DATABASE_URL`."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parts.path
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path or ":memory:",
            "SQLITE_LOCK_TIMEOUT": "30",
            # The library's recorder, with the idempotency claims table (storage/claims.py).
            "APPLICATION_RECORDER_TOPIC": "nome_core.storage.claims:ClaimsSQLiteRecorder",
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
            # How long a command waits for a pooled connection: with the database down or
            # stalled, a client gets its 503 in seconds, not minutes.
            "POSTGRES_CONNECT_TIMEOUT": str(CHECKOUT_TIMEOUT_S),
            # A pooled connection is checked before use, so the first command after the
            # database comes back gets a live one rather than the error of a dead one.
            "POSTGRES_PRE_PING": "y",
            # A stuck lock should surface as an error, not hang every writer forever.
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            # The library's recorder, inserting rows as column arrays (storage/pgrecorder.py).
            "APPLICATION_RECORDER_TOPIC": "nome_core.storage.pgrecorder:ColumnArrayRecorder",
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
        if self.is_postgres:
            # Before the recorder opens the pool: its first connections get them too.
            self.factory.datastore.pool.kwargs.update(CONNECTION_OPTIONS)  # type: ignore[attr-defined]
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

    def insert(self, events: Sequence[Event], claims: Sequence[ClaimRow] = ()) -> list[int]:
        """Insert events and their commands' idempotency claims in one transaction; returns
        the events' positions. Raises StreamConflict, or ClaimTaken for a used key."""
        try:
            ids = self.recorder.insert_events([to_stored(e) for e in events], claims=claims)
        except IntegrityError as exc:
            if is_claim_violation(exc):
                raise ClaimTaken() from exc
            raise StreamConflict("the stream was changed by another writer") from exc
        assert ids is not None
        return list(ids)

    def claimed(self, tenant_id: str, key_sha256: str) -> Claimed | None:
        """The tenant's claim of an idempotency key, if it was made in the last 24 hours."""
        table = claims_table(self.table)
        if self.is_postgres:
            sql = (
                "SELECT fingerprint, stream_id, version, sealed "  # noqa: S608
                f'FROM "{self.schema or "public"}"."{table}" '
                "WHERE tenant_id = %s AND key_sha256 = %s "
                "AND created_at >= now() - interval '24 hours'"
            )
            params: tuple[object, ...] = (tenant_id, key_sha256)
        else:
            sql = (
                f"SELECT fingerprint, stream_id, version, sealed FROM {table} "  # noqa: S608
                "WHERE tenant_id = ? AND key_sha256 = ? "
                "AND created_at >= (julianday('now') - 2440587.5) * 86400.0 - ?"
            )
            params = (tenant_id, key_sha256, CLAIM_TTL_S)
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        fingerprint, stream_id, version, sealed = row
        return Claimed(
            fingerprint, str(UUID(str(stream_id))), int(version), bytes(sealed) if sealed else None
        )

    def expire_claims(self) -> int:
        """Forget claims older than 24 hours; how many."""
        table = claims_table(self.table)
        if self.is_postgres:
            sql = (
                f'DELETE FROM "{self.schema or "public"}"."{table}" '  # noqa: S608
                "WHERE created_at < now() - interval '24 hours'"
            )
            params: tuple[object, ...] = ()
        else:
            sql = (
                f"DELETE FROM {table} "  # noqa: S608
                "WHERE created_at < (julianday('now') - 2440587.5) * 86400.0 - ?"
            )
            params = (CLAIM_TTL_S,)
        with self._cursor(commit=True) as cursor:
            cursor.execute(sql, params)
            # The library's SQLite cursor keeps the sqlite3 one (and its rowcount) inside.
            return int(getattr(cursor, "sqlite_cursor", cursor).rowcount or 0)

    def load(self, stream_id: str, *, after: int = 0, upto: int | None = None) -> list[Event]:
        """A stream's events after seq `after`, up to seq `upto` (seqs are gapless)."""
        limit = None if upto is None else max(0, upto - after)
        return [to_event(r.state) for r in self.stream_rows(stream_id, after=after, limit=limit)]

    @contextmanager
    def _cursor(self, *, commit: bool = False) -> Iterator[Any]:
        """A cursor in a transaction, rows as tuples."""
        with self.factory.datastore.transaction(commit=commit) as cursor:  # type: ignore[attr-defined]
            if self.is_postgres:
                cursor.row_factory = tuple_row
            yield cursor

    def load_many(self, streams: Sequence[tuple[str, int]]) -> dict[str, list[Event]]:
        """Several streams' events after a seq each, in one query (a command's streams are
        read together: one round trip however many it touches)."""
        if not streams:
            return {}
        if not self.is_postgres:
            return {s: self.load(s, after=after) for s, after in streams}
        sql = (
            f"SELECT e.originator_id, e.state FROM {self._qualified} e "  # noqa: S608
            "JOIN unnest(%s::uuid[], %s::bigint[]) AS w(id, after) "
            "ON e.originator_id = w.id AND e.originator_version > w.after "
            "ORDER BY e.originator_id, e.originator_version"
        )
        found: dict[str, list[Event]] = {}
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.row_factory = tuple_row
            cursor.execute(
                sql, ([UUID(s) for s, _ in streams], [after for _, after in streams]), binary=True
            )
            for originator_id, state in cursor.fetchall():
                found.setdefault(str(originator_id), []).append(to_event(bytes(state)))
        return found

    def stream_rows(self, stream_id: str, *, after: int = 0, limit: int | None = None) -> list[Row]:
        """A stream's rows after seq `after` (at most `limit`), with their global positions
        (for envelopes). The recorder's `select_events` does not return positions."""
        if self.is_postgres:
            sql = (
                f"SELECT notification_id, topic, state FROM {self._qualified} "  # noqa: S608
                "WHERE originator_id = %s AND originator_version > %s "
                "ORDER BY originator_version LIMIT %s"
            )
            return self._pg_rows(sql, (UUID(stream_id), after, limit))
        sql = (
            f"SELECT rowid, topic, state FROM {self.table} "  # noqa: S608
            "WHERE originator_id = ? AND originator_version > ? "
            "ORDER BY originator_version LIMIT ?"
        )
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, (UUID(stream_id).hex, after, -1 if limit is None else limit))
            return [Row(r["rowid"], r["topic"], bytes(r["state"])) for r in cursor.fetchall()]

    def version(self, stream_id: str) -> int:
        """How many events a stream has (its last seq; 0 for none)."""
        if self.is_postgres:
            sql = (
                f"SELECT max(originator_version) FROM {self._qualified} "  # noqa: S608
                "WHERE originator_id = %s"
            )
            param: object = UUID(stream_id)
        else:
            sql = f"SELECT max(originator_version) FROM {self.table} WHERE originator_id = ?"  # noqa: S608
            param = UUID(stream_id).hex
        with self.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, (param,))
            row = cursor.fetchone()
            value = next(iter(row.values())) if isinstance(row, dict) else row[0]
            return int(value or 0)

    def head(self) -> int:
        """The last position in the log (0 for an empty log). Its own query: the
        recorder's retries for a minute when the database is down."""
        column = "notification_id" if self.is_postgres else "rowid"
        table = self._qualified if self.is_postgres else self.table
        with self._cursor() as cursor:
            cursor.execute(f"SELECT max({column}) FROM {table}")  # noqa: S608
            row = cursor.fetchone()
        return int(row[0] or 0)

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

    def close(self) -> None:
        self.factory.close()


def _log_rows(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    """psycopg's row factory protocol: each row of a log query straight into a `Row`."""
    return Row._make
