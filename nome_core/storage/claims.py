"""Idempotency claims (API.md §0) beside the log: one row per tenant and key, inserted in the
transaction that appends the claiming command's events, so a command takes effect at most
once per key whatever crashes, retries or Redis wipes happen. A claim says where the
command's result is (its first stream and that stream's version after it), so a retry is
answered from the log; it lives 24 hours.

The SQLite recorder of the embedded default is here too: the library's own, with the claims
table beside its events table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from nome_core.bus import ClaimRow

# A claim's life (API.md §0: the same key within 24 h returns the first response).
CLAIM_TTL_S = 24 * 3600
# Epoch seconds in SQLite (3.40 has no subsecond unixepoch).
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def claims_table(events_table: str) -> str:
    """`nome_events` -> `nome_idempotency`."""
    return events_table.removesuffix("_events") + "_idempotency"


def is_claim_violation(error: Exception) -> bool:
    """Whether a uniqueness violation was a claim's (not a stream version's)."""
    return "_idempotency" in str(error)


class ClaimsSQLiteRecorder(SQLiteApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claims_table = claims_table(self.events_table_name)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {claims_table(self.events_table_name)} ("
            "tenant_id TEXT NOT NULL, key_sha256 TEXT NOT NULL, fingerprint TEXT NOT NULL, "
            "stream_id TEXT NOT NULL, version INTEGER NOT NULL, sealed BLOB, "
            f"created_at REAL NOT NULL DEFAULT {_NOW}, "
            "PRIMARY KEY (tenant_id, key_sha256))",
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        claims: Sequence[ClaimRow] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        for row in claims:
            c.execute(
                f"DELETE FROM {self.claims_table} WHERE tenant_id = ? AND key_sha256 = ? "  # noqa: S608
                f"AND created_at < {_NOW} - ?",
                (row.tenant_id, row.claim.key_sha256, CLAIM_TTL_S),
            )
            c.execute(
                f"INSERT INTO {self.claims_table} "  # noqa: S608
                "(tenant_id, key_sha256, fingerprint, stream_id, version, sealed) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.tenant_id,
                    row.claim.key_sha256,
                    row.claim.fingerprint,
                    row.stream_id,
                    row.version,
                    row.claim.sealed,
                ),
            )
        return super()._insert_events(c, stored_events, **kwargs)
