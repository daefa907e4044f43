"""Verify the hash chains of exported envelopes (API.md §3 and §8, docs/audit-format.md).

Shared by `GET /v1/audit/verify` and the offline `nome audit verify FILE`, so this module
needs nothing but the standard library and msgspec: no database, no server, no other part of
NOME. It re-derives every hash from an envelope's JSON text with the stdlib `json` module,
exactly as an auditor following the documentation would, rather than trusting the encoder
that wrote the log (the writer's `canonical_json` is the same rule; tests hold the two
together).

The verifier is fed one envelope at a time and keeps only each stream's last `(seq, hash)`:
memory grows with the number of streams, never with the number of events.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple

import msgspec

HASH_PREFIX = "sha256:"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, separators `,` and `:`, no whitespace, UTF-8 with non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str | None, content: dict[str, Any]) -> str:
    """`sha256:` + hex SHA-256 of `prev_hash` (empty for a stream's first event), `\\n`, content."""
    digest = hashlib.sha256((prev_hash or "").encode() + b"\n" + canonical_json(content))
    return HASH_PREFIX + digest.hexdigest()


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """The first thing wrong with one event (or one line of an export file)."""

    stream_id: str | None
    seq: int | None
    position: int | None
    reason: str
    # 1-based line of an export file; absent when checking the log itself.
    line: int | None = None


class Report(msgspec.Struct, frozen=True):
    """The verdict, as `GET /v1/audit/verify` answers it."""

    ok: bool
    streams_checked: int
    events_checked: int
    first_bad: Problem | None


class _Head(NamedTuple):
    seq: int
    hash: str


# Best-effort reading of a line that is not valid JSON, so its report can still name the
# stream. Top-level `stream_id`, `seq` and `position` precede `data` in every envelope (and
# `seq` precedes `data` in a stored row), so the first match is the envelope's own.
_SALVAGE_STREAM = re.compile(rb'"stream_id":"([^"\\]{1,100})"')
_SALVAGE_SEQ = re.compile(rb'"seq":(\d{1,18})')
_SALVAGE_POSITION = re.compile(rb'"position":(\d{1,18})')


def _salvage(raw: bytes, pattern: re.Pattern[bytes]) -> bytes | None:
    match = pattern.search(raw)
    return match.group(1) if match else None


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ChainVerifier:
    """Checks envelopes one by one, in export (position) order.

    Complete mode (the default) expects every stream from its first event, gapless: a
    changed, dropped, inserted or reordered event is reported. `partial=True` is for exports
    filtered by `after` or `types`: a stream may start mid-chain and skip seqs, so a dropped
    event goes unnoticed, but changed and reordered ones are still caught, and wherever two
    events of a stream are consecutive their link is checked.
    """

    def __init__(self, *, partial: bool = False, keep: int = 20) -> None:
        self.partial = partial
        self.keep = keep
        self.events_checked = 0
        self.problem_count = 0
        # The first `keep` problems, in the order found.
        self.problems: list[Problem] = []
        self._heads: dict[str, _Head] = {}
        self._last_position: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def streams_checked(self) -> int:
        return len(self._heads)

    def report(self) -> Report:
        return Report(
            ok=self.ok,
            streams_checked=self.streams_checked,
            events_checked=self.events_checked,
            first_bad=self.problems[0] if self.problems else None,
        )

    def feed_line(self, text: bytes | str, *, line: int | None = None) -> Problem | None:
        """Check one NDJSON line (one envelope); returns its problem, if any."""
        try:
            envelope = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
            self.events_checked += 1
            raw = text.encode() if isinstance(text, str) else text
            what = "an empty line" if not raw.strip() else f"not valid JSON ({exc})"
            return self._unreadable(raw, what, line=line)
        return self.feed(envelope, line=line)

    def unreadable(
        self, raw: bytes, reason: str, *, position: int | None = None, line: int | None = None
    ) -> Problem:
        """Record an event that could not even be decoded (a corrupt stored row)."""
        self.events_checked += 1
        return self._unreadable(raw, reason, position=position, line=line)

    def feed(self, envelope: Any, *, line: int | None = None) -> Problem | None:
        """Check one decoded envelope (a dict as `json.loads` gives it)."""
        self.events_checked += 1
        shape = _shape_error(envelope)
        if shape is not None:
            stream = envelope.get("stream_id") if isinstance(envelope, dict) else None
            return self._problem(
                stream if isinstance(stream, str) else None, None, None, shape, line
            )
        stream_id: str = envelope["stream_id"]
        seq: int = envelope["seq"]
        position: int = envelope["position"]
        receipt: dict[str, Any] = envelope["receipt"]
        claimed: str = receipt["hash"]
        prev_hash: str | None = receipt["prev_hash"]

        problem: str | None = None
        if self._last_position is not None and position <= self._last_position:
            problem = (
                f"position {position} does not come after the previous line's "
                f"{self._last_position}: the export is out of order"
            )
        content = {k: v for k, v in envelope.items() if k not in ("receipt", "position")}
        head = self._heads.get(stream_id)
        if problem is None and chain_hash(prev_hash, content) != claimed:
            problem = "the hash does not match the event's content: the event was changed"
        if problem is None:
            problem = self._link_error(head, seq, prev_hash)
        # Move on from what the line claims, so one fault is reported once, not at every
        # later event of the stream.
        self._heads[stream_id] = _Head(seq, claimed)
        if self._last_position is None or position > self._last_position:
            self._last_position = position
        if problem is None:
            return None
        return self._problem(stream_id, seq, position, problem, line)

    def _link_error(self, head: _Head | None, seq: int, prev_hash: str | None) -> str | None:
        expected = head.seq + 1 if head is not None else 1
        if self.partial:
            if head is None or seq > expected:
                return None  # the export starts mid-stream or skips filtered events
            if seq < expected:
                return (
                    f"seq {seq} comes after seq {head.seq} of its stream: "
                    "events are repeated or out of order"
                )
        elif seq != expected:
            return (
                f"seq {seq} where {expected} was expected: an event of this stream is "
                "missing, repeated or out of order"
            )
        wanted = head.hash if head is not None else None
        if prev_hash != wanted:
            if wanted is None:
                return "prev_hash must be null on a stream's first event"
            return "prev_hash is not the hash of the stream's previous event"
        return None

    def _unreadable(
        self, raw: bytes, reason: str, *, position: int | None = None, line: int | None = None
    ) -> Problem:
        stream = _salvage(raw, _SALVAGE_STREAM)
        seq = _salvage(raw, _SALVAGE_SEQ)
        if position is None:
            found = _salvage(raw, _SALVAGE_POSITION)
            position = int(found) if found else None
        return self._problem(
            stream.decode("utf-8", "replace") if stream else None,
            int(seq) if seq else None,
            position,
            reason,
            line,
        )

    def _problem(
        self,
        stream_id: str | None,
        seq: int | None,
        position: int | None,
        reason: str,
        line: int | None,
    ) -> Problem:
        problem = Problem(stream_id=stream_id, seq=seq, position=position, reason=reason, line=line)
        self.problem_count += 1
        if len(self.problems) < self.keep:
            self.problems.append(problem)
        return problem


def _shape_error(envelope: Any) -> str | None:
    """Why this is not an envelope at all, or None."""
    if not isinstance(envelope, dict):
        return "not an envelope: a JSON object was expected"
    receipt = envelope.get("receipt")
    if not isinstance(envelope.get("stream_id"), str):
        return "not an envelope: stream_id is missing or not a string"
    if not (_int(envelope.get("seq")) and envelope["seq"] >= 1):
        return "not an envelope: seq is missing or not a positive integer"
    if not _int(envelope.get("position")):
        return "not an envelope: position is missing or not an integer"
    if not (
        isinstance(receipt, dict)
        and isinstance(receipt.get("hash"), str)
        and (receipt.get("prev_hash") is None or isinstance(receipt.get("prev_hash"), str))
        and "prev_hash" in receipt
    ):
        return "not an envelope: receipt must have a hash and a prev_hash"
    return None
