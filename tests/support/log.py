"""Reading the log as the tests check it."""

from __future__ import annotations

from collections.abc import Iterator

from nome_core.events import Event
from nome_core.storage.rows import Row, decode_stored, envelope_json, to_stored
from nome_core.storage.store import EventStore


def scan(
    store: EventStore, after: int = 0, *, upto: int | None = None, page: int = 1000
) -> Iterator[Row]:
    """Every row after a position up to `upto` (default: the head now), in pages."""
    if upto is None:
        upto = store.head()
    while True:
        rows = store.read(after, page, upto=upto)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].position


def event_envelope_json(event: Event) -> bytes:
    """The envelope of a recorded event, through the stored format it was written in."""
    assert event.position is not None
    return envelope_json(decode_stored(to_stored(event).state), event.position)
