"""Reading the global log in pages across gaps in the positions, on Postgres and SQLite.

Positions have gaps wherever a transaction rolled back (a conflicting group commit, a crash)
after taking its ids. `EventStore.read` queries windows of `limit` positions, so a page must
still hold `limit` rows whenever that many exist up to `upto`: a short page tells every
caller (catch-up, export, verify) that it reached the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nome_core.clock import SystemClock
from nome_core.events import Head, Meta, seal
from nome_core.storage.rows import Row
from nome_core.storage.store import EventStore
from nome_core.threads.events import MessageAdded
from tests.support.env import PG_URL, unique
from tests.support.log import scan

EVENTS = 120


def _fill(store: EventStore) -> None:
    clock = SystemClock()
    stream = clock.new_id()
    events = seal(
        [MessageAdded(message_id=f"m{i}", role="user", content=f"#{i}") for i in range(EVENTS)],
        stream_id=stream,
        head=Head(),
        tenant_id=clock.new_id(),
        thread_id=stream,
        run_id=None,
        meta=Meta(),
        clock=clock,
    )
    for start in range(0, EVENTS, 10):
        store.insert(events[start : start + 10])


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventStore]:
    if request.param == "postgres":
        log = EventStore(PG_URL, schema=unique("t_reads"))
    else:
        log = EventStore(f"sqlite:///{tmp_path_factory.mktemp('reads')}/events.db")
    _fill(log)
    # A hole wider than a page near the start, one row here and there, two at the end.
    _delete(log, {*range(6, 31), 43, 77, 78, EVENTS - 1, EVENTS})
    try:
        yield log
    finally:
        if log.is_postgres:
            log.drop()
        log.close()


def _delete(store: EventStore, positions: set[int]) -> None:
    """Rows gone as if their transactions had rolled back: holes in the positions."""
    if not positions:
        return
    if store.is_postgres:
        sql = f"DELETE FROM {store._qualified} WHERE notification_id = ANY(%s)"
        with store.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, (sorted(positions),))
    else:
        marks = ",".join("?" * len(positions))
        sql = f"DELETE FROM {store.table} WHERE rowid IN ({marks})"
        with store.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql, sorted(positions))


def _all(store: EventStore) -> list[Row]:
    return list(scan(store, page=EVENTS * 2))


def test_a_page_across_a_hole_wider_than_itself_still_holds_its_limit(store: EventStore) -> None:
    rows = _all(store)
    assert len(rows) == EVENTS - 30

    page = store.read(0, 20, upto=EVENTS)

    assert page == rows[:20]
    assert store.read(page[-1].position, 20, upto=EVENTS) == rows[20:40]
    # Up to a head inside the trailing hole: the last rows, then a short page.
    assert store.read(rows[-3].position, 20, upto=EVENTS) == rows[-2:]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_paging_through_the_log_returns_every_row_once_in_order(
    store: EventStore, data: st.DataObject
) -> None:
    rows = _all(store)
    positions = [row.position for row in rows]
    limit = data.draw(st.integers(1, 40), label="limit")
    after = data.draw(st.sampled_from([0, *positions]), label="after")
    upto = data.draw(st.sampled_from(positions), label="upto")
    expected = [r for r in rows if after < r.position <= upto]

    got: list[Row] = []
    cursor = after
    while True:
        page = store.read(cursor, limit, upto=upto)
        assert len(page) <= limit
        got += page
        if len(page) < limit:
            break
        cursor = page[-1].position

    assert got == expected
