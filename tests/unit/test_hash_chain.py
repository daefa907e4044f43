"""The hash chain of API.md §3: anyone can recompute it from an export with the stdlib alone.

`recompute` below deliberately uses nothing from nome_core: it is what an auditor would write
from the documentation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nome_core.events import DomainEvent, Event, Head, Meta, seal
from nome_core.storage.rows import decode_stored, envelope_json, to_stored
from nome_core.storage.store import EventStore
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadRenamed
from tests.support.events import GOLDEN_ROW, any_payload, metas
from tests.support.fakes import StepClock
from tests.support.log import scan

STREAM = "00000000-0000-4000-8000-0000000000cc"
NEW_STREAM = Head()
NO_META = Meta()


def recompute(envelope: bytes) -> str:
    """`receipt.hash` of an exported envelope, from the documented rule and the stdlib only."""
    document = json.loads(envelope)
    content = {k: v for k, v in document.items() if k not in ("receipt", "position")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prev = document["receipt"]["prev_hash"] or ""
    digest = hashlib.sha256(prev.encode("utf-8") + b"\n" + canonical.encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def sealed(
    payloads: Sequence[DomainEvent],
    head: Head = NEW_STREAM,
    meta: Meta = NO_META,
    clock: StepClock | None = None,
) -> list[Event]:
    return seal(
        payloads,
        stream_id=STREAM,
        head=head,
        tenant_id="tenant-ü",
        thread_id=STREAM,
        run_id=None,
        meta=meta,
        clock=clock or StepClock(),
    )


def exported(events: Sequence[Event], first_position: int = 1) -> list[bytes]:
    """The envelopes an export would contain, made from the stored rows."""
    return [
        envelope_json(decode_stored(to_stored(e).state), first_position + i)
        for i, e in enumerate(events)
    ]


def test_the_first_event_of_a_stream_has_no_previous_hash() -> None:
    (first,) = sealed([ThreadCreated(title="t", metadata={})])
    (envelope,) = exported([first])

    assert first.prev_hash is None
    assert json.loads(envelope)["receipt"] == {"hash": first.hash, "prev_hash": None}


def test_each_event_links_to_the_hash_of_the_one_before_it() -> None:
    events = sealed(
        [ThreadCreated(title="t", metadata={}), ThreadRenamed(title="u"), ThreadRenamed(title="v")]
    )

    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.prev_hash for e in events] == [None, events[0].hash, events[1].hash]
    assert len({e.hash for e in events}) == 3


def test_sealing_onto_an_existing_stream_continues_its_sequence_and_chain() -> None:
    clock = StepClock()
    first = sealed([ThreadCreated(title="t", metadata={})], clock=clock)
    later = sealed([ThreadRenamed(title="u")], Head(1, first[0].hash), clock=clock)
    together = sealed([ThreadCreated(title="t", metadata={}), ThreadRenamed(title="u")])

    assert (later[0].seq, later[0].prev_hash) == (2, first[0].hash)
    # Sealing in two commands or in one gives the same chain (same ids and times here).
    assert [e.hash for e in first + later] == [e.hash for e in together]


def test_the_hash_of_a_known_row_is_what_the_documented_rule_gives() -> None:
    envelope = envelope_json(decode_stored(GOLDEN_ROW), 42)

    assert recompute(envelope) == (
        "sha256:1a9cacf48a46d3e9c9fc4754c5850ce95e70c98185362461a652349e2635bf68"
    )
    assert json.loads(envelope)["receipt"]["hash"] == recompute(envelope)


@settings(max_examples=150)
@given(
    payloads=st.lists(any_payload, min_size=1, max_size=4),
    meta=metas,
    first_position=st.integers(1, 2**40),
)
def test_the_stdlib_recomputes_every_receipt_hash_from_the_exported_envelopes(
    payloads: list[DomainEvent], meta: Meta, first_position: int
) -> None:
    events = sealed(payloads, meta=meta)

    envelopes = exported(events, first_position)

    previous: str | None = None
    for envelope in envelopes:
        receipt = json.loads(envelope)["receipt"]
        assert receipt["prev_hash"] == previous
        assert recompute(envelope) == receipt["hash"]
        previous = receipt["hash"]


def test_non_ascii_text_is_exported_and_hashed_as_utf8_not_escaped() -> None:
    text = "Grüße, 日本語, emoji 🚀, line\u2028separator"
    (event,) = sealed(
        [MessageAdded(message_id="m", role="user", content=text)], meta=Meta(principal="ü")
    )
    (envelope,) = exported([event])

    assert text.encode("utf-8") in envelope
    assert b"\\u" not in envelope
    assert recompute(envelope) == event.hash
    # The hashed bytes themselves carry the characters as UTF-8: an ASCII-escaping encoder
    # would give another hash.
    content = {k: v for k, v in json.loads(envelope).items() if k not in ("receipt", "position")}
    escaped = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert "sha256:" + hashlib.sha256(b"\n" + escaped.encode()).hexdigest() != event.hash


def test_metadata_and_position_are_outside_the_hash() -> None:
    payload = [ThreadCreated(title="t", metadata={})]
    (plain,) = sealed(payload)
    (with_meta,) = sealed(payload, meta=Meta(principal="key-1", request_id="r"))
    (a,) = exported([plain], first_position=1)
    (b,) = exported([plain], first_position=99)

    assert plain.hash == with_meta.hash
    assert recompute(a) == recompute(b) == plain.hash


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", 2), ("at", "2030-01-01T00:00:00.000000Z"), ("tenant_id", "x"), ("type", "x.y")],
)
def test_changing_any_hashed_field_of_an_export_breaks_its_hash(field: str, value: object) -> None:
    (event,) = sealed([MessageAdded(message_id="m", role="user", content="pay 10")])
    document = json.loads(exported([event])[0])
    document[field] = value

    assert recompute(json.dumps(document).encode()) != event.hash


def test_changing_the_data_of_an_export_breaks_its_hash() -> None:
    (event,) = sealed([MessageAdded(message_id="m", role="user", content="pay 10")])
    document = json.loads(exported([event])[0])
    document["data"]["content"] = "pay 1000"

    assert recompute(json.dumps(document).encode()) != event.hash


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(f"sqlite:///{tmp_path}/events.db")
    yield store
    store.close()


def test_a_stream_read_back_from_the_store_verifies_link_by_link(
    sqlite_store: EventStore,
) -> None:
    clock = StepClock()
    first = sealed([ThreadCreated(title="Grüße", metadata={"k": "v"})], clock=clock)
    rest = sealed(
        [MessageAdded(message_id=f"m{i}", role="user", content=f"#{i} ✓") for i in range(5)],
        Head(1, first[0].hash),
        clock=clock,
    )
    sqlite_store.insert(first)
    sqlite_store.insert(rest)

    envelopes = [envelope_json(decode_stored(r.state), r.position) for r in scan(sqlite_store)]

    receipts = [json.loads(e)["receipt"] for e in envelopes]
    assert receipts[0]["prev_hash"] is None
    for envelope, receipt in zip(envelopes, receipts, strict=True):
        assert recompute(envelope) == receipt["hash"]
    for before, after in itertools.pairwise(receipts):
        assert after["prev_hash"] == before["hash"]
    assert [json.loads(e)["position"] for e in envelopes] == [1, 2, 3, 4, 5, 6]
