"""Verify the hash chains of exported envelopes and the signed checkpoint that closes an
export (API.md §3 and §8, docs/audit-format.md).

Shared by `GET /v1/audit/verify`, the exporters (which write the checkpoint) and the offline
`nome audit verify FILE`, so this module needs nothing but the standard library, msgspec,
`cryptography` (Ed25519) and the pure event module: no database, no server. An auditor
can run it with the export and the deployment's public key only. It re-derives every hash
from an envelope's JSON text with the stdlib `json` module, exactly as an auditor following
the documentation would, rather than trusting the encoder that wrote the log; the canonical
form and the chain hash are the writer's own functions (nome_core/events.py, stdlib only).

The verifier is fed one envelope at a time and keeps only each stream's last `(seq, hash)`:
memory grows with the number of streams, never with the number of events. The exporter
keeps the same per-stream heads to write the checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The one canonical encoding and chain hash, the writer's own (pure: stdlib and msgspec).
from nome_core.events import HASH_PREFIX, canonical_json, chain_hash


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """The first thing wrong with one event (or one line of an export file)."""

    stream_id: str | None
    seq: int | None
    position: int | None
    reason: str
    # 1-based line of an export file; absent when checking the log itself.
    line: int | None = None
    # About the export's checkpoint (or its absence), not about one event.
    checkpoint: bool = False


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

    @property
    def heads(self) -> Mapping[str, tuple[int, str]]:
        """Each stream's last `(seq, hash)` as the lines claimed them."""
        return self._heads

    @property
    def last_position(self) -> int | None:
        return self._last_position

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
        return self.record(
            Problem(stream_id=stream_id, seq=seq, position=position, reason=reason, line=line)
        )

    def record(self, problem: Problem) -> Problem:
        """Count a problem (found here or by a caller checking more than the chains)."""
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


# Checkpoints: the signed last line of every export (docs/audit-format.md, "The checkpoint").

CHECKPOINT_VERSION = 1
SIGNATURE_ALG = "Ed25519"


class Scope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The part of a tenant's log an export covers: its filter, `until` pinned to a position."""

    after: int
    until: int
    stream_id: str | None
    # Sorted; null when every type is included.
    types: list[str] | None


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an export holds, as the exporter wrote it: the body that is signed."""

    version: int
    tenant_id: str
    filter: Scope
    events: int
    streams: int
    # The last envelope's position; null when the export holds none.
    last_position: int | None
    # `heads_digest` of every stream's last (seq, hash) in the export.
    heads: str


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who signed a checkpoint, and the signature."""

    alg: str
    key_id: str
    # Standard base64 of the 64-byte Ed25519 signature of the checkpoint's canonical JSON.
    value: str


def heads_digest(heads: Mapping[str, tuple[int, str]]) -> str:
    """`sha256:` + hex SHA-256 of one `stream_id seq hash\\n` line per stream, sorted by
    stream id. A digest rather than the list keeps the checkpoint one short line however
    many streams there are; the heads themselves are in the file."""
    digest = hashlib.sha256()
    for stream_id in sorted(heads):
        seq, head = heads[stream_id]
        digest.update(f"{stream_id} {seq} {head}\n".encode())
    return HASH_PREFIX + digest.hexdigest()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of SHA-256 of its bytes."""
    return hashlib.sha256(key.public_bytes_raw()).hexdigest()[:16]


def public_key_text(key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of a public key in standard base64, as the public-key route sends it."""
    return base64.b64encode(key.public_bytes_raw()).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 (standard or url-safe) or from the JSON body of
    `GET /v1/audit/public-key`; ValueError when it is neither."""
    text = text.strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            raise ValueError("not an Ed25519 public key: not valid JSON") from None
        field = body.get("public_key") if isinstance(body, dict) else None
        if not isinstance(field, str):
            raise ValueError("not an Ed25519 public key: the JSON has no public_key")
        text = field
    normal = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except ValueError:
        raise ValueError("not an Ed25519 public key: not base64") from None
    if len(raw) != 32:
        raise ValueError(f"not an Ed25519 public key: {len(raw)} bytes where 32 were expected")
    return Ed25519PublicKey.from_public_bytes(raw)


def checkpoint_line(checkpoint: Checkpoint, signer: Ed25519PrivateKey) -> bytes:
    """The export's last line: `{"checkpoint": {...}, "signature": {...}}` and its newline.

    Canonical JSON, so `"checkpoint"` is its first key and the line can't be taken for an
    envelope. Ed25519 signatures are deterministic: the same checkpoint under the same key
    gives the same bytes, so a repeated export stays byte for byte the same.
    """
    body = msgspec.to_builtins(checkpoint)
    signature = Signature(
        alg=SIGNATURE_ALG,
        key_id=key_id(signer.public_key()),
        value=base64.b64encode(signer.sign(canonical_json(body))).decode(),
    )
    return canonical_json({"checkpoint": body, "signature": msgspec.to_builtins(signature)}) + b"\n"


class ExportVerifier:
    """Checks an export file line by line: the hash chains of its envelopes (a
    `ChainVerifier`) and the signed checkpoint that must be its last line.

    The checkpoint must be there, be last, and record exactly what the file holds: as many
    events and streams, the same last position, the same per-stream heads, nothing outside
    its filter. That finds a dropped tail or a dropped stream, which the chains alone can't.
    With `public_key` its signature is checked too; without it, a file cut short by
    accident is still caught, but not one whose cutter also rewrote the checkpoint.
    """

    def __init__(
        self, *, partial: bool = False, public_key: Ed25519PublicKey | None = None, keep: int = 20
    ) -> None:
        self.chains = ChainVerifier(partial=partial, keep=keep)
        self.public_key = public_key
        self.checkpoint: Checkpoint | None = None
        # The key id whose signature verified; None when not checked or not valid.
        self.signed_by: str | None = None
        self._checkpoint_line: int | None = None
        self._finished = False
        # What the checkpoint's filter is checked against, kept small: a file of one tenant
        # has one tenant id, and a handful of types.
        self._tenant: str | None = None
        self._other_tenant: str | None = None
        self._types: set[str] = set()
        self._first_position: int | None = None

    @property
    def ok(self) -> bool:
        return self.chains.ok

    @property
    def problems(self) -> list[Problem]:
        return self.chains.problems

    @property
    def problem_count(self) -> int:
        return self.chains.problem_count

    def feed_line(self, text: bytes | str, *, line: int | None = None) -> Problem | None:
        """Check one NDJSON line: an envelope, or the checkpoint."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            self._after_checkpoint(None, line)
            return self.chains.feed_line(text, line=line)
        if isinstance(document, dict) and "checkpoint" in document:
            return self._feed_checkpoint(document, line)
        self._after_checkpoint(document, line)
        if isinstance(document, dict):
            self._note(document)
        return self.chains.feed(document, line=line)

    def finish(self) -> Report:
        """The end of the file: a missing checkpoint is a problem."""
        if not self._finished and self._checkpoint_line is None:
            self._record("no checkpoint: the export may have been cut short", None)
        self._finished = True
        return self.chains.report()

    def _record(self, reason: str, line: int | None) -> Problem:
        return self.chains.record(
            Problem(
                stream_id=None, seq=None, position=None, reason=reason, line=line, checkpoint=True
            )
        )

    def _after_checkpoint(self, document: Any, line: int | None) -> None:
        if self._checkpoint_line is None:
            return
        envelope = document if isinstance(document, dict) else {}
        stream, seq = envelope.get("stream_id"), envelope.get("seq")
        self.chains.record(
            Problem(
                stream_id=stream if isinstance(stream, str) else None,
                seq=seq if _int(seq) else None,
                position=None,
                reason=f"comes after the checkpoint (line {self._checkpoint_line}): "
                "the checkpoint must be the export's last line",
                line=line,
            )
        )

    def _note(self, envelope: dict[str, Any]) -> None:
        tenant = envelope.get("tenant_id")
        kind = envelope.get("type")
        position = envelope.get("position")
        if isinstance(tenant, str):
            if self._tenant is None:
                self._tenant = tenant
            elif tenant != self._tenant and self._other_tenant is None:
                self._other_tenant = tenant
        if isinstance(kind, str):
            self._types.add(kind)
        if _int(position) and self._first_position is None:
            self._first_position = position

    def _feed_checkpoint(self, document: dict[str, Any], line: int | None) -> Problem | None:
        if self._checkpoint_line is not None:
            return self._record(
                f"checkpoint: a second one (the first is on line {self._checkpoint_line}): "
                "an export has one, on its last line",
                line,
            )
        self._checkpoint_line = line
        body = document["checkpoint"]
        version = body.get("version") if isinstance(body, dict) else None
        if _int(version) and version != CHECKPOINT_VERSION:
            # Before its fields are checked: another version may have other fields.
            return self._record(
                f"checkpoint: version {version} is not one this verifier knows "
                f"({CHECKPOINT_VERSION})",
                line,
            )
        try:
            if set(document) != {"checkpoint", "signature"}:
                raise ValueError("it must have exactly `checkpoint` and `signature`")
            checkpoint = msgspec.convert(body, Checkpoint, strict=True)
            signature = msgspec.convert(document["signature"], Signature, strict=True)
        except (msgspec.ValidationError, ValueError) as exc:
            return self._record(f"checkpoint: not a valid checkpoint: {exc}", line)
        self.checkpoint = checkpoint
        first: Problem | None = None
        mismatch = self._mismatch(checkpoint)
        if mismatch is not None:
            first = self._record(mismatch, line)
        if self.public_key is not None:
            forged = self._signature_error(body, signature, self.public_key)
            if forged is not None:
                problem = self._record(forged, line)
                first = first or problem
        return first

    def _mismatch(self, checkpoint: Checkpoint) -> str | None:
        chains, scope = self.chains, checkpoint.filter
        found: list[str] = []
        recorded = "where the checkpoint records"
        if chains.events_checked != checkpoint.events:
            found.append(f"{chains.events_checked} events {recorded} {checkpoint.events}")
        if chains.streams_checked != checkpoint.streams:
            found.append(f"{chains.streams_checked} streams {recorded} {checkpoint.streams}")
        if chains.last_position != checkpoint.last_position:
            found.append(
                f"last position {_shown(chains.last_position)} {recorded} "
                f"{_shown(checkpoint.last_position)}"
            )
        if heads_digest(chains.heads) != checkpoint.heads:
            found.append("other per-stream heads (last seq and hash) than it records")
        for tenant in (self._tenant, self._other_tenant):
            if tenant is not None and tenant != checkpoint.tenant_id:
                found.append(f"events of tenant {tenant} {recorded} {checkpoint.tenant_id}")
                break
        if scope.types is not None and not self._types <= set(scope.types):
            outside = ", ".join(sorted(self._types - set(scope.types)))
            found.append(f"events of types outside the checkpoint's filter ({outside})")
        if scope.stream_id is not None and not set(chains.heads) <= {scope.stream_id}:
            found.append(f"events of streams other than the checkpoint's {scope.stream_id}")
        if self._first_position is not None and self._first_position <= scope.after:
            found.append(f"positions at or before the checkpoint's `after` ({scope.after})")
        if chains.last_position is not None and chains.last_position > scope.until:
            found.append(f"positions after the checkpoint's `until` ({scope.until})")
        if not found:
            return None
        return (
            "checkpoint: the file holds "
            + "; ".join(found)
            + ". Events were dropped or added, or the checkpoint was changed"
        )

    def _signature_error(
        self, body: Any, signature: Signature, public_key: Ed25519PublicKey
    ) -> str | None:
        given = key_id(public_key)
        if signature.alg != SIGNATURE_ALG:
            return f"checkpoint: signed with {signature.alg!r}, where {SIGNATURE_ALG} is expected"
        try:
            value = base64.b64decode(signature.value, validate=True)
            public_key.verify(value, canonical_json(body))
        except (ValueError, InvalidSignature):  # binascii.Error is a ValueError
            if signature.key_id != given:
                return (
                    f"checkpoint: signed by key {signature.key_id}, not by the given key "
                    f"{given}: it was signed again by someone else, or the wrong public key "
                    "was given"
                )
            return (
                f"checkpoint: the signature does not verify under the given key {given}: "
                "the checkpoint was changed after it was signed"
            )
        self.signed_by = given
        return None


def _shown(position: int | None) -> str:
    return "none" if position is None else str(position)
