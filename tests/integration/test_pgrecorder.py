"""The column-array insert of nome_core/pgrecorder.py writes exactly what the library's own
recorder would: same rows, positions in input order, a version conflict refused whole."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from nome_core.clock import SystemClock
from nome_core.errors import StreamConflict
from nome_core.events import Event, Head, Meta, seal
from nome_core.storage.pgrecorder import ColumnArrayRecorder
from nome_core.storage.rows import decode_stored, to_stored
from nome_core.storage.store import EventStore
from nome_core.threads.events import MessageAdded
from tests.support.env import PG_URL, unique
from tests.support.log import scan


@pytest.fixture
def store() -> Iterator[EventStore]:
    log = EventStore(PG_URL, schema=unique("t_rec"))
    try:
        yield log
    finally:
        log.drop()
        log.close()


def _stream(clock: SystemClock, count: int) -> list[Event]:
    stream = clock.new_id()
    return seal(
        [
            MessageAdded(message_id=f"m{i}", role="user", content=f"#{i} ✓ \x00 é")
            for i in range(count)
        ],
        stream_id=stream,
        head=Head(),
        tenant_id=clock.new_id(),
        thread_id=stream,
        run_id=None,
        meta=Meta(principal="k"),
        clock=clock,
    )


def test_a_batch_of_several_streams_lands_in_input_order_as_the_library_reads_it(
    store: EventStore,
) -> None:
    assert isinstance(store.recorder, ColumnArrayRecorder)
    clock = SystemClock()
    # Interleaved streams: positions must follow the input, not the stream.
    a, b = _stream(clock, 3), _stream(clock, 2)
    batch = [a[0], b[0], a[1], b[1], a[2]]

    positions = store.insert(batch)

    assert positions == sorted(positions) and len(set(positions)) == len(batch)
    rows = {row.position: row for row in scan(store)}
    assert [decode_stored(rows[p].state).id for p in positions] == [e.id for e in batch]
    # The library's own recorder, on the same table, reads back the very stored events.
    stock = PostgresApplicationRecorder(
        datastore=store.recorder.datastore,  # type: ignore[attr-defined]
        events_table_name=store.table,
    )
    for events in (a, b):
        expected = [to_stored(e) for e in events]
        got = stock.select_events(UUID(events[0].stream_id))
        assert [(str(s.originator_id), s.originator_version, s.topic, s.state) for s in got] == [
            (str(s.originator_id), s.originator_version, s.topic, s.state) for s in expected
        ]


def test_a_version_already_taken_refuses_the_whole_batch(store: EventStore) -> None:
    clock = SystemClock()
    first = _stream(clock, 2)
    store.insert(first)
    other = _stream(clock, 1)
    rival = seal(
        [MessageAdded(message_id="late", role="user", content="second writer")],
        stream_id=first[0].stream_id,
        head=Head(1, first[0].hash),  # version 2 is taken
        tenant_id=first[0].tenant_id,
        thread_id=first[0].stream_id,
        run_id=None,
        meta=Meta(),
        clock=clock,
    )
    head = store.head()

    with pytest.raises(StreamConflict):
        store.insert(other + rival)

    assert store.head() == head
    assert store.stream_rows(other[0].stream_id) == []
