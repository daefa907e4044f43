"""The offline verifier (`nome audit verify FILE`, nome_core.audit) and the stand-alone recipe
of docs/audit-format.md, on exports made from sealed events: no database, no server."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from nome_core import audit
from nome_core.audit import (
    ChainVerifier,
    Checkpoint,
    ExportVerifier,
    Problem,
    Scope,
    checkpoint_line,
    key_id,
    public_key_text,
)
from nome_core.events import DomainEvent, Event, Head, Meta, chain_hash, seal
from nome_core.runs.events import MessageDelta, RunStarted
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadRenamed
from nome_core.tools.events import PolicyDecision, ToolCalled
from tests.support.audit import (
    KEY,
    OTHER_KEY,
    checkpoint_recipe,
    edited,
    flip,
    recipe,
    resigned,
    run_checkpoint_recipe,
    run_recipe,
    stream_of,
    successors,
)
from tests.support.cli import nome
from tests.support.events import any_payload
from tests.support.fakes import StepClock
from tests.support.log import event_envelope_json

TENANT = "7d1c0c8e-4a55-5f43-9a38-2f5d2b0b0a11"
# A string literal in JSON text. Outside strings JSON has no quotes, so matching left to
# right finds exactly the literals; the ones followed by `:` are keys.
STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{4}|.)")
# The public half of the deployment's fixed key (tests/support/audit.py).
PUBLIC = public_key_text(KEY.public_key())


def export_of(streams: Sequence[Sequence[DomainEvent]], *, tenant: str = TENANT) -> list[bytes]:
    """An export of these streams: their events interleaved round-robin, positions with gaps."""
    clock = StepClock()
    chains: list[list[Event]] = []
    for payloads in streams:
        stream = str(uuid.UUID(int=len(chains) + 1000))
        chains.append(
            seal(
                payloads,
                stream_id=stream,
                head=Head(),
                tenant_id=tenant,
                thread_id=stream,
                run_id=None,
                meta=Meta(),
                clock=clock,
            )
        )
    ordered = [e for turn in itertools.zip_longest(*chains) for e in turn if e is not None]
    positions = itertools.count(3, 2)  # gaps between positions are normal
    return [
        event_envelope_json(msgspec.structs.replace(e, position=next(positions))) for e in ordered
    ]


def checkpoint_of(
    lines: Sequence[bytes],
    *,
    tenant: str = TENANT,
    after: int = 0,
    until: int = 1000,
    types: list[str] | None = None,
    stream_id: str | None = None,
) -> Checkpoint:
    """What an exporter records for these envelope lines, worked out here from the JSON."""
    heads: dict[str, tuple[int, str]] = {}
    for line in lines:
        envelope = json.loads(line)
        heads[envelope["stream_id"]] = (envelope["seq"], envelope["receipt"]["hash"])
    listed = "".join(f"{s} {seq} {h}\n" for s, (seq, h) in sorted(heads.items())).encode()
    return Checkpoint(
        version=1,
        tenant_id=tenant,
        filter=Scope(after=after, until=until, stream_id=stream_id, types=types),
        events=len(lines),
        streams=len(heads),
        last_position=json.loads(lines[-1])["position"] if lines else None,
        heads="sha256:" + hashlib.sha256(listed).hexdigest(),
    )


def signed(lines: Sequence[bytes], *, key: Ed25519PrivateKey = KEY, **scope: object) -> list[bytes]:
    """The lines, closed by their checkpoint signed with `key` (the line without its `\n`)."""
    checkpoint = checkpoint_of(lines, **scope)  # type: ignore[arg-type]
    return [*lines, checkpoint_line(checkpoint, key).rstrip(b"\n")]


def check_export(
    lines: Sequence[bytes], *, public_key: bool = True, partial: bool = False
) -> ExportVerifier:
    verifier = ExportVerifier(partial=partial, public_key=KEY.public_key() if public_key else None)
    for number, line in enumerate(lines, 1):
        verifier.feed_line(line, line=number)
    verifier.finish()
    return verifier


def reasons(verifier: ExportVerifier) -> list[str]:
    return [p.reason for p in verifier.problems]


def sample_export() -> list[bytes]:
    """Three streams: a thread with awkward text, a run with a tool call, a lone event."""
    return export_of(
        [
            [
                ThreadCreated(title='Prüfung ✓ "quoted" \\ back', metadata={"k": "ü"}),
                MessageAdded(message_id="m1", role="user", content="naïve 😀 \u2028 tab\t"),
                ThreadRenamed(title="renamed"),
                MessageAdded(message_id="m2", role="assistant", content="x" * 300),
            ],
            [
                RunStarted(model="scripted"),
                ToolCalled(
                    call_id="c1",
                    tool="math.evaluate",
                    arguments={"expression": "1+2", "big": 2**70, "f": 0.1, "e": 1e16},
                    policy=PolicyDecision(decision="allow", rule="default"),
                ),
                MessageDelta(message_id="m3", text='math.evaluate: {"value": 3}'),
            ],
            [ThreadCreated(title="alone", metadata={})],
        ]
    )


def verify(lines: Sequence[bytes], *, partial: bool = False) -> ChainVerifier:
    verifier = ChainVerifier(partial=partial)
    for number, line in enumerate(lines, 1):
        verifier.feed_line(line, line=number)
    return verifier


def first_problem(lines: Sequence[bytes], **kwargs: bool) -> Problem:
    verifier = verify(lines, **kwargs)
    assert not verifier.ok, "tampering went unnoticed"
    return verifier.problems[0]


def string_value_bytes(line: bytes) -> list[int]:
    """Offsets of every letter or digit in the line's string values (not keys, not escapes)."""
    escaped = {i for m in ESCAPE.finditer(line) for i in range(m.start(), m.end())}
    return [
        offset
        for match in STRING.finditer(line)
        if line[match.end() : match.end() + 1] != b":"
        for offset in range(match.start(1), match.end(1))
        if offset not in escaped and line[offset] < 0x80 and chr(line[offset]).isalnum()
    ]


def test_an_untouched_export_verifies_with_its_streams_and_events_counted() -> None:
    lines = sample_export()

    verifier = verify(lines)

    assert verifier.report() == audit.Report(
        ok=True, streams_checked=3, events_checked=len(lines), first_bad=None
    )


def test_an_empty_export_verifies_as_nothing_checked() -> None:
    assert verify([]).report() == audit.Report(
        ok=True, streams_checked=0, events_checked=0, first_bad=None
    )


@settings(max_examples=100)
@given(st.lists(st.lists(any_payload, min_size=1, max_size=4), min_size=1, max_size=3))
def test_the_verifier_accepts_every_export_the_writer_can_produce(
    streams: list[list[DomainEvent]],
) -> None:
    lines = export_of(streams)

    verifier = verify(lines)

    assert verifier.ok, verifier.problems
    assert verifier.events_checked == len(lines)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.text() | st.integers() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(), JSON_VALUES), st.none() | st.text())
def test_the_verifiers_hash_is_the_writers_hash(
    content: dict[str, object], prev: str | None
) -> None:
    assert audit.chain_hash(prev, content) == chain_hash(prev, content)


def test_a_flipped_byte_in_any_string_value_of_any_line_is_reported_at_that_line() -> None:
    lines = sample_export()
    checked = 0
    for i, line in enumerate(lines):
        for offset in string_value_bytes(line):
            tampered = flip(line, offset)
            problem = first_problem([*lines[:i], tampered, *lines[i + 1 :]])
            assert problem.line == i + 1, (line, offset, problem)
            assert problem.stream_id == stream_of(tampered)
            checked += 1
    assert checked > 1000


def test_a_byte_that_breaks_the_json_is_reported_at_its_line_with_the_stream() -> None:
    lines = sample_export()
    for i, line in enumerate(lines):
        for broken in (line.replace(b'"at":"', b'"at":', 1), line[:-2], b"\xff" + line):
            problem = first_problem([*lines[:i], broken, *lines[i + 1 :]])
            assert (problem.line, problem.stream_id) == (i + 1, stream_of(line))
            assert "not valid JSON" in problem.reason


def test_dropping_a_line_is_reported_at_the_next_event_of_its_stream() -> None:
    lines = sample_export()
    for i, j in successors(lines).items():
        problem = first_problem(lines[:i] + lines[i + 1 :])
        # Line j moved up by one; 1-based that is j.
        assert (problem.line, problem.stream_id) == (j, stream_of(lines[i]))
        assert "missing" in problem.reason


def test_dropping_the_last_event_of_a_stream_shows_only_in_the_counts() -> None:
    # A chain's end is not anchored by the chain: the export's checkpoint anchors it (below).
    lines = sample_export()
    last_of_stream = {stream_of(line): i for i, line in enumerate(lines)}
    for i in last_of_stream.values():
        verifier = verify(lines[:i] + lines[i + 1 :])
        assert verifier.ok
        assert verifier.events_checked == len(lines) - 1


def test_swapping_two_lines_of_one_stream_is_reported_at_the_first_of_them() -> None:
    lines = sample_export()
    by_stream: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        by_stream.setdefault(stream_of(line), []).append(i)
    swaps = 0
    for indexes in by_stream.values():
        for i, j in itertools.combinations(indexes, 2):
            swapped = list(lines)
            swapped[i], swapped[j] = lines[j], lines[i]
            problem = first_problem(swapped)
            assert (problem.line, problem.stream_id) == (i + 1, stream_of(lines[i]))
            swaps += 1
    assert swaps >= 9


def test_swapping_lines_of_different_streams_is_reported_as_out_of_order() -> None:
    lines = sample_export()
    assert stream_of(lines[0]) != stream_of(lines[1])

    problem = first_problem([lines[1], lines[0], *lines[2:]])

    assert problem.line == 2 and "out of order" in problem.reason


def test_a_repeated_line_is_reported() -> None:
    lines = sample_export()

    problem = first_problem([*lines[:3], lines[2], *lines[3:]])

    assert problem.line == 4


def test_one_changed_event_is_reported_once_not_at_every_later_event() -> None:
    lines = sample_export()
    offset = lines[0].index(b'"title":"') + len(b'"title":"')

    verifier = verify([flip(lines[0], offset), *lines[1:]])

    assert verifier.problem_count == 1
    assert "changed" in verifier.problems[0].reason


def test_lines_that_are_json_but_not_envelopes_are_reported() -> None:
    lines = sample_export()
    envelope = json.loads(lines[0])
    for bad in ([], {"stream_id": 1}, {**envelope, "seq": 0}, {**envelope, "receipt": None}):
        problem = first_problem([json.dumps(bad).encode(), *lines[1:]])
        assert problem.line == 1 and problem.reason.startswith("not an envelope")


def test_a_partial_export_verifies_but_still_catches_changes_and_reordering() -> None:
    lines = sample_export()
    after_start = lines[4:]  # every stream begins mid-chain
    only_some = [line for line in lines if b'"type":"thread.renamed"' not in line]

    assert not verify(after_start).ok
    assert verify(after_start, partial=True).ok
    assert verify(only_some, partial=True).ok
    changed = flip(after_start[2], after_start[2].index(b'"at":"') + 9)
    assert not verify([*after_start[:2], changed, *after_start[3:]], partial=True).ok
    by_stream = [i for i, line in enumerate(lines) if stream_of(line) == stream_of(lines[0])]
    swapped = list(lines)
    swapped[by_stream[1]], swapped[by_stream[2]] = lines[by_stream[2]], lines[by_stream[1]]
    assert not verify(swapped, partial=True).ok


def test_the_cli_verifies_a_file_offline_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(signed(sample_export())) + b"\n")

    # Nowhere to connect to: the file is all it needs.
    done = nome(
        "audit", "verify", str(path), env={"NOME_DATABASE_URL": "postgresql://nobody@0.0.0.0:1/x"}
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "ok: 8 events in 3 streams, every hash chain intact"
    ]


def test_the_cli_names_line_and_stream_of_a_tampered_file_and_exits_1(tmp_path: Path) -> None:
    lines = sample_export()
    i = successors(lines)[0]  # the second event of the first stream
    j = successors(lines)[i]  # its third, which moves up to line j (1-based) once i is gone
    path = tmp_path / "export.ndjson"
    # Signed over what the file holds, so the chain is all that can catch the dropped line.
    path.write_bytes(b"\n".join(signed(lines[:i] + lines[i + 1 :])) + b"\n")

    done = nome("audit", "verify", str(path))

    assert done.returncode == 1, done.stderr
    out = done.stdout.strip().splitlines()
    assert out[0].startswith(f"{path}:{j}: stream {stream_of(lines[0])} seq 3: ")
    assert out[-1] == "FAILED: 1 problems in 7 events in 3 streams"


def test_the_cli_says_when_it_cannot_read_the_file(tmp_path: Path) -> None:
    done = nome("audit", "verify", str(tmp_path / "missing.ndjson"))

    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_the_documented_recipe_is_short_and_uses_the_standard_library_only() -> None:
    code = recipe()

    assert len(code.strip().splitlines()) <= 15
    imported = re.findall(r"^import (.+)$|^from (\S+) import", code, re.M)
    assert imported == [("hashlib, json, sys", "")]


def test_the_documented_recipe_accepts_an_export_and_rejects_tampered_ones(
    tmp_path: Path,
) -> None:
    lines = sample_export()
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    good = run_recipe(path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "ok: 8 events in 3 streams"

    i = 0  # the first event of a stream with more to come
    for tampered in (
        [*lines[:i], flip(lines[i], lines[i].index(b'"at":"') + 8), *lines[i + 1 :]],
        [*lines[:i], lines[i][:-3], *lines[i + 1 :]],
        [*lines[:i], *lines[i + 1 :]],
    ):
        path.write_bytes(b"\n".join(tampered) + b"\n")
        bad = run_recipe(path)
        assert bad.returncode != 0
        assert re.match(r"line \d+: ", bad.stderr), bad.stderr


# Checkpoints: the signed last line of every export.


def test_a_signed_export_verifies_with_its_signature_checked() -> None:
    lines = signed(sample_export())

    verifier = check_export(lines)

    assert verifier.ok, verifier.problems
    assert verifier.signed_by == key_id(KEY.public_key())
    assert verifier.checkpoint == checkpoint_of(lines[:-1])
    assert verifier.chains.report() == audit.Report(
        ok=True, streams_checked=3, events_checked=8, first_bad=None
    )


def test_the_checkpoint_line_is_canonical_json_that_no_envelope_can_be_taken_for() -> None:
    line = signed(sample_export())[-1]

    document = json.loads(line)

    assert line.startswith(b'{"checkpoint":{')
    assert audit.canonical_json(document) == line
    assert set(document) == {"checkpoint", "signature"}
    assert document["signature"]["alg"] == "Ed25519"
    value = base64.b64decode(document["signature"]["value"])
    KEY.public_key().verify(value, audit.canonical_json(document["checkpoint"]))
    # Deterministic: the same export signs to the same bytes.
    assert signed(sample_export())[-1] == line


def test_dropping_the_last_line_of_any_stream_is_reported_at_the_checkpoint() -> None:
    lines = sample_export()
    last_of_stream = {stream_of(line): i for i, line in enumerate(lines)}
    for i in last_of_stream.values():
        cut = signed(lines)
        del cut[i]

        verifier = check_export(cut)

        assert not verifier.ok
        problem = verifier.problems[0]
        assert (problem.line, problem.checkpoint) == (len(cut), True)
        assert (
            f"{len(lines) - 1} events where the checkpoint records {len(lines)}" in problem.reason
        )
        assert "other per-stream heads" in problem.reason


def test_dropping_the_last_event_line_is_reported_with_the_last_position() -> None:
    lines = signed(sample_export())

    verifier = check_export([*lines[:-2], lines[-1]])

    (problem,) = verifier.problems
    last, before = (json.loads(line)["position"] for line in lines[-2:-4:-1])
    assert f"last position {before} where the checkpoint records {last}" in problem.reason


def test_dropping_a_whole_stream_is_reported_at_the_checkpoint() -> None:
    lines = signed(sample_export())
    for stream in {stream_of(line) for line in lines[:-1]}:
        kept = [line for line in lines[:-1] if stream_of(line) != stream]

        verifier = check_export([*kept, lines[-1]])

        assert not verifier.ok
        assert "2 streams where the checkpoint records 3" in verifier.problems[0].reason


def test_dropping_any_single_line_of_a_signed_export_is_reported() -> None:
    lines = signed(sample_export())
    for i in range(len(lines)):
        assert not check_export(lines[:i] + lines[i + 1 :]).ok, f"line {i + 1} went unnoticed"
        assert not check_export(lines[:i] + lines[i + 1 :], public_key=False).ok


def test_an_export_without_its_checkpoint_fails_as_possibly_cut_short() -> None:
    for key in (True, False):
        verifier = check_export(sample_export(), public_key=key)

        assert [(p.line, p.checkpoint, p.reason) for p in verifier.problems] == [
            (None, True, "no checkpoint: the export may have been cut short")
        ]
    assert reasons(check_export([])) == ["no checkpoint: the export may have been cut short"]


def test_an_edited_count_is_reported_and_no_longer_matches_the_signature() -> None:
    lines = signed(sample_export())
    tampered = [*lines[:-1], edited(lines[-1], events=9)]

    assert reasons(check_export(tampered)) == [
        "checkpoint: the file holds 8 events where the checkpoint records 9. Events were "
        "dropped or added, or the checkpoint was changed",
        f"checkpoint: the signature does not verify under the given key "
        f"{key_id(KEY.public_key())}: the checkpoint was changed after it was signed",
    ]
    # A cut file whose checkpoint was edited to match: only the signature gives it away.
    cut = lines[:-2]
    body = checkpoint_of(cut)
    matching = edited(lines[-1], **msgspec.to_builtins(body))
    assert check_export([*cut, matching], public_key=False).ok
    assert reasons(check_export([*cut, matching])) == [
        f"checkpoint: the signature does not verify under the given key "
        f"{key_id(KEY.public_key())}: the checkpoint was changed after it was signed"
    ]


def test_a_checkpoint_signed_again_with_another_key_is_reported_with_both_key_ids() -> None:
    lines = sample_export()
    forged = signed(lines[:-1], key=OTHER_KEY)  # the last line dropped, a new checkpoint

    verifier = check_export(forged)

    assert reasons(verifier) == [
        f"checkpoint: signed by key {key_id(OTHER_KEY.public_key())}, not by the given key "
        f"{key_id(KEY.public_key())}: it was signed again by someone else, or the wrong "
        "public key was given"
    ]
    assert verifier.signed_by is None
    # Without the key, a consistent forgery can't be told from the real thing: hence the key.
    assert check_export(forged, public_key=False).ok
    # The key id is not signed: changing it only changes what the report names.
    renamed = json.loads(signed(lines)[-1])
    renamed["signature"]["key_id"] = "0" * 16
    assert check_export([*lines, audit.canonical_json(renamed)]).ok


def test_lines_after_the_checkpoint_and_a_second_checkpoint_are_reported() -> None:
    lines = signed(sample_export())
    extra = lines[0]

    after = check_export([*lines, extra])
    second = check_export([*lines, lines[-1]])

    first = after.problems[0]
    assert (first.line, first.stream_id) == (len(lines) + 1, stream_of(extra))
    assert "comes after the checkpoint" in first.reason
    assert [(p.line, p.checkpoint) for p in second.problems] == [(len(lines) + 1, True)]
    assert second.problems[0].reason.startswith("checkpoint: a second one")


def test_a_file_holding_events_outside_the_checkpoints_filter_is_reported() -> None:
    lines = sample_export()
    positions = [json.loads(line)["position"] for line in lines]
    stream = stream_of(lines[0])
    cases = {
        "of tenant": dict(tenant="00000000-0000-4000-8000-000000000001"),
        "types outside": dict(types=["thread.created"]),
        "streams other than": dict(stream_id=stream),
        "at or before": dict(after=positions[0]),
        "after the checkpoint's `until`": dict(until=positions[-1] - 1),
    }
    for expected, scope in cases.items():
        reason = reasons(check_export(signed(lines, **scope)))[0]
        assert expected in reason, (expected, reason)


def test_a_malformed_checkpoint_or_one_of_an_unknown_version_is_reported() -> None:
    lines = signed(sample_export())
    document = json.loads(lines[-1])
    for bad, expected in [
        ({**document, "extra": 1}, "not a valid checkpoint"),
        ({"checkpoint": {**document["checkpoint"], "events": "8"}}, "not a valid checkpoint"),
        ({**document, "checkpoint": None}, "not a valid checkpoint"),
        ({**document, "signature": {"alg": "Ed25519"}}, "not a valid checkpoint"),
        (json.loads(resigned(lines[-1], version=2)), "version 2 is not one"),
    ]:
        verifier = check_export([*lines[:-1], audit.canonical_json(bad)])
        assert expected in verifier.problems[0].reason, verifier.problems


def test_a_partial_export_is_held_to_its_checkpoint_so_a_dropped_event_is_found() -> None:
    lines = sample_export()
    after_start = lines[4:]
    after = json.loads(lines[3])["position"]
    partial = signed(after_start, after=after)

    assert check_export(partial, partial=True).ok
    # The chains of a partial export can't tell a dropped event from a filtered one ...
    dropped = partial[:1] + partial[2:]
    assert verify(dropped[:-1], partial=True).ok
    # ... but its checkpoint counts what it holds.
    assert not check_export(dropped, partial=True).ok


@settings(max_examples=50)
@given(st.lists(st.lists(any_payload, min_size=1, max_size=4), min_size=1, max_size=3))
def test_the_export_verifier_accepts_every_signed_export_the_writer_can_produce(
    streams: list[list[DomainEvent]],
) -> None:
    lines = signed(export_of(streams))

    verifier = check_export(lines)

    assert verifier.ok, verifier.problems
    assert verifier.checkpoint is not None
    assert verifier.checkpoint.events == len(lines) - 1


def test_the_cli_checks_the_signature_with_a_public_key_given_as_text_or_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(signed(sample_export())) + b"\n")
    as_text = tmp_path / "key.txt"
    as_text.write_text(PUBLIC + "\n")
    as_json = tmp_path / "key.json"
    as_json.write_text(json.dumps({"alg": "Ed25519", "key_id": "x", "public_key": PUBLIC}))

    for key in (PUBLIC, str(as_text), str(as_json)):
        done = nome("audit", "verify", str(path), "--public-key", key)

        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip().splitlines() == [
            f"checkpoint signed by key {key_id(KEY.public_key())}: the file holds all it "
            f"records (tenant {TENANT}, positions 1..1000)",
            "ok: 8 events in 3 streams, every hash chain intact",
        ]
        assert "NOT checked" not in done.stderr


def test_the_cli_without_a_public_key_says_the_signature_was_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(signed(sample_export())) + b"\n")

    done = nome("audit", "verify", str(path))

    assert done.returncode == 0
    assert "signature was NOT checked" in done.stderr
    assert "--public-key" in done.stderr


def test_the_cli_fails_a_cut_export_a_missing_checkpoint_and_another_key(tmp_path: Path) -> None:
    lines = signed(sample_export())
    path = tmp_path / "export.ndjson"
    other = public_key_text(OTHER_KEY.public_key())
    cases = [
        ([*lines[:-2], lines[-1]], PUBLIC, f"{path}:{len(lines) - 1}: checkpoint: the file holds"),
        (lines[:-1], PUBLIC, f"{path}: no checkpoint: the export may have been cut short"),
        (lines[:-1], None, f"{path}: no checkpoint: the export may have been cut short"),
        (lines, other, f"{path}:{len(lines)}: checkpoint: signed by key "),
    ]
    for content, key, first in cases:
        path.write_bytes(b"\n".join(content) + b"\n")

        done = nome("audit", "verify", str(path), *(["--public-key", key] if key else []))

        assert done.returncode == 1, done.stdout
        assert done.stdout.startswith(first), done.stdout
        assert done.stdout.strip().splitlines()[-1].startswith("FAILED: 1 problems")


def test_the_cli_refuses_a_public_key_it_cannot_read_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(signed(sample_export())) + b"\n")
    for bad in ("not-base64!", base64.b64encode(b"short").decode(), '{"alg": "Ed25519"}'):
        done = nome("audit", "verify", str(path), "--public-key", bad)

        assert done.returncode == 2, done.stdout
        assert "not an Ed25519 public key" in done.stderr


def test_the_cli_says_a_filtered_export_needs_partial(tmp_path: Path) -> None:
    lines = sample_export()
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(signed(lines[4:], after=json.loads(lines[3])["position"])) + b"\n")

    assert nome("audit", "verify", "--partial", str(path)).returncode == 0
    done = nome("audit", "verify", str(path))
    assert done.returncode == 1
    assert "verify it with --partial" in done.stdout


def test_the_documented_checkpoint_recipe_needs_only_cryptography_besides_the_stdlib() -> None:
    code = checkpoint_recipe()

    modules = re.findall(r"^import (.+)$|^from (\S+) import", code, re.M)
    assert modules == [
        ("base64, hashlib, json, sys", ""),
        ("", "cryptography.exceptions"),
        ("", "cryptography.hazmat.primitives.asymmetric.ed25519"),
    ]


def test_the_documented_checkpoint_recipe_accepts_a_signed_export_and_rejects_cut_ones(
    tmp_path: Path,
) -> None:
    lines = signed(sample_export())
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    good = run_checkpoint_recipe(path, PUBLIC)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == (
        f"ok: 8 events in 3 streams, up to position 1000, as signed for tenant {TENANT}"
    )
    # The stdlib recipe reads past the checkpoint line to check the chains.
    assert run_recipe(path).stdout.strip() == "ok: 8 events in 3 streams"

    stream = stream_of(lines[0])
    for tampered, key, says in [
        ([*lines[:-2], lines[-1]], PUBLIC, "does not hold what its signed checkpoint records"),
        ([line for line in lines if stream.encode() not in line], PUBLIC, "does not hold"),
        (lines[:-1], PUBLIC, "no checkpoint"),
        ([*lines[:-1], edited(lines[-1], events=9)], PUBLIC, "signature is not valid"),
        (signed(lines[:-2], key=OTHER_KEY), PUBLIC, "signature is not valid"),
        (lines, public_key_text(OTHER_KEY.public_key()), "signature is not valid"),
    ]:
        path.write_bytes(b"\n".join(tampered) + b"\n")
        bad = run_checkpoint_recipe(path, key)
        assert bad.returncode != 0
        assert says in bad.stderr, bad.stderr
