"""The offline verifier (`nome audit verify FILE`, nome_core.audit) and the stand-alone recipe
of docs/audit-format.md, on exports made from sealed events: no database, no server."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from nome_core import audit
from nome_core.audit import ChainVerifier, Problem
from nome_core.eventstore import (
    DomainEvent,
    Event,
    Head,
    Meta,
    chain_hash,
    event_envelope_json,
    seal,
)
from nome_core.runs.events import MessageDelta, PolicyDecision, RunStarted, ToolCalled
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadRenamed
from tests.unit.test_events import any_payload
from tests.unit.test_hash_chain import StepClock

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-format.md"
TENANT = "7d1c0c8e-4a55-5f43-9a38-2f5d2b0b0a11"
# A string literal in JSON text. Outside strings JSON has no quotes, so matching left to
# right finds exactly the literals; the ones followed by `:` are keys.
STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{4}|.)")


def recipe() -> str:
    """The stand-alone verification script, exactly as the documentation prints it."""
    section = DOC.read_text().split("## Verify an export yourself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the recipe's code block is missing"
    return code.group(1)


def nome(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `nome` command in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nome_api.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NOME_LOG_LEVEL": "warning", **(env or {})},
    )


def run_recipe(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the recipe as an auditor would: a fresh, isolated interpreter, stdlib only."""
    return subprocess.run(
        [sys.executable, "-I", "-c", recipe(), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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


def stream_of(line: bytes) -> str:
    return str(json.loads(line)["stream_id"])


def successors(lines: Sequence[bytes]) -> dict[int, int]:
    """Index of each line -> index of the next line of the same stream (if any)."""
    following: dict[int, int] = {}
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        stream = stream_of(line)
        if stream in last:
            following[last[stream]] = i
        last[stream] = i
    return following


def flip(line: bytes, at: int) -> bytes:
    """Flip the lowest bit of one letter or digit: still valid JSON, one byte different."""
    assert line[at] < 0x80 and chr(line[at]).isalnum()
    return line[:at] + bytes([line[at] ^ 1]) + line[at + 1 :]


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
    # A chain's end is not anchored: docs/audit-format.md says so, and says to compare counts.
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
    path.write_bytes(b"\n".join(sample_export()) + b"\n")

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
    path.write_bytes(b"\n".join(lines[:i] + lines[i + 1 :]) + b"\n")

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
