"""Every event type survives the permanent stored format unchanged, and its topic is pinned.

Payloads are generated from the msgspec type information of each registered class, so an
event type added to any context is covered the moment it is registered, with no edit here.
`event_payloads` and `recorded_events` live in tests/support/events.py, shared with the hash
chain and audit tests.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nome_core.events import EVENT_TYPES, Client, DomainEvent, Meta, event_type
from nome_core.storage.rows import decode_stored, to_event, to_stored
from tests.support.events import GOLDEN_ROW, event_payloads, recorded_events

# -- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=40)
@given(data=st.data())
def test_every_event_type_round_trips_through_the_stored_format_unchanged(
    type_name: str, data: st.DataObject
) -> None:
    event = data.draw(recorded_events(event_payloads(EVENT_TYPES[type_name])))
    stored = to_stored(event)

    assert to_event(stored.state) == event
    assert to_event(stored.state, position=7) == msgspec.structs.replace(event, position=7)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=5)
@given(data=st.data())
def test_the_stored_topic_of_every_event_type_is_its_type_name(
    type_name: str, data: st.DataObject
) -> None:
    cls = EVENT_TYPES[type_name]
    event = data.draw(recorded_events(event_payloads(cls)))
    stored = to_stored(event)

    assert cls.type == type_name
    assert stored.topic == type_name
    assert stored.originator_version == event.seq
    assert str(stored.originator_id) == event.stream_id


# The stored type names of the contexts in production: renaming one orphans every stored row
# of that type. A class may move or be renamed in Python; its type name may not change.
PINNED_TOPICS = {
    "tenant.created": "TenantCreated",
    "key.created": "KeyCreated",
    "key.revoked": "KeyRevoked",
    "thread.created": "ThreadCreated",
    "thread.renamed": "ThreadRenamed",
    "thread.deleted": "ThreadDeleted",
    "thread.message_added": "MessageAdded",
    "tool.started": "ToolStarted",
    "tool.deferred": "ToolDeferred",
    "message.discarded": "MessageDiscarded",
    "model.retry_scheduled": "ModelRetryScheduled",
}


@pytest.mark.parametrize(("type_name", "class_name"), sorted(PINNED_TOPICS.items()))
def test_pinned_type_names_still_name_the_same_events(type_name: str, class_name: str) -> None:
    assert EVENT_TYPES[type_name].__name__ == class_name


def test_a_type_name_cannot_be_registered_twice() -> None:
    before = dict(EVENT_TYPES)

    with pytest.raises(ValueError, match="registered twice"):

        @event_type("thread.created")
        class Impostor(DomainEvent, frozen=True, kw_only=True):
            title: str

    assert before == EVENT_TYPES


def test_a_row_in_the_first_stored_format_still_decodes_and_reencodes_byte_for_byte() -> None:
    from nome_core.threads.events import ThreadCreated

    event = to_event(GOLDEN_ROW, position=42)

    assert event.data == ThreadCreated(title="Grüße", metadata={"k": "v"})
    assert event.meta == Meta(
        principal="key-1", client=Client(surface="cli", version="1.2.3"), request_id="req-9"
    )
    assert (event.seq, event.position, event.prev_hash) == (1, 42, None)
    assert to_stored(event).state == GOLDEN_ROW
    assert (
        bytes(decode_stored(GOLDEN_ROW).data)
        == b'{"title":"Gr\xc3\xbc\xc3\x9fe","metadata":{"k":"v"}}'
    )
