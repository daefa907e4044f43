"""Threads: decide validates against the folded state; evolve is pure and total."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from nome_core.bus import owned_by
from nome_core.events import DomainEvent, Event, Head, Meta, head_of, seal
from nome_core.keys.events import KeyCreated
from nome_core.threads import decide
from nome_core.threads.commands import AddMessage, CreateThread, DeleteThread, RenameThread
from nome_core.threads.errors import ThreadNotFound
from nome_core.threads.events import MessageAdded, ThreadCreated, ThreadDeleted, ThreadRenamed
from nome_core.threads.state import ThreadState, evolve
from tests.support.fakes import StepClock

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
THREAD = "00000000-0000-4000-8000-00000000000a"


class Stream:
    """One thread's log in memory: append decided payloads, fold them with `evolve`."""

    def __init__(self, tenant_id: str = TENANT) -> None:
        self.tenant_id = tenant_id
        self.events: list[Event] = []
        self.clock = StepClock()

    def append(self, payloads: Sequence[DomainEvent]) -> list[Event]:
        new = seal(
            payloads,
            stream_id=THREAD,
            head=head_of(self.events, Head()),
            tenant_id=self.tenant_id,
            thread_id=THREAD,
            run_id=None,
            meta=Meta(),
            clock=self.clock,
        )
        self.events.extend(new)
        return new

    @property
    def state(self) -> ThreadState | None:
        state: ThreadState | None = None
        for event in self.events:
            state = evolve(state, event)
        return state


def create(title: str, metadata: dict[str, str]) -> list[DomainEvent]:
    return decide.decide(CreateThread(thread_id=THREAD, title=title, metadata=metadata), None)


def rename(state: ThreadState | None, tenant: str, title: str) -> list[DomainEvent]:
    """As the bus runs it: another tenant's thread is loaded as a missing one."""
    return decide.decide(RenameThread(thread_id=THREAD, title=title), owned_by(state, tenant))


def delete(state: ThreadState | None, tenant: str) -> list[DomainEvent]:
    return decide.decide(DeleteThread(thread_id=THREAD), owned_by(state, tenant))


def add_message(
    state: ThreadState | None, tenant: str, *, message_id: str, role: str, content: str
) -> list[DomainEvent]:
    cmd = AddMessage(
        thread_id=THREAD,
        message_id=message_id,
        role="system" if role == "system" else "user",
        content=content,
        attributes={},
    )
    return decide.decide(cmd, owned_by(state, tenant))


def created(title: str = "Plans", metadata: dict[str, str] | None = None) -> Stream:
    stream = Stream()
    stream.append(create(title, metadata or {"project": "apollo"}))
    return stream


def test_creating_a_thread_records_its_title_and_metadata() -> None:
    assert create("Plans", {"project": "apollo"}) == [
        ThreadCreated(title="Plans", metadata={"project": "apollo"})
    ]


def test_a_created_thread_takes_its_id_tenant_times_and_seq_from_the_event() -> None:
    stream = created()
    first = stream.events[0]

    assert stream.state == ThreadState(
        id=THREAD,
        tenant_id=TENANT,
        title="Plans",
        metadata={"project": "apollo"},
        created_at=first.at,
        updated_at=first.at,
        seq=first.seq,
    )


def test_renaming_changes_the_title_and_the_update_time_only() -> None:
    stream = created()
    before = stream.state
    assert before is not None

    (renamed,) = stream.append(rename(before, TENANT, "Roadmap"))

    assert renamed.data == ThreadRenamed(title="Roadmap")
    after = stream.state
    assert after is not None
    assert (after.title, after.updated_at, after.created_at) == (
        "Roadmap",
        renamed.at,
        before.created_at,
    )
    assert after.metadata == before.metadata


def test_renaming_to_the_same_title_appends_nothing() -> None:
    stream = created("Plans")

    assert rename(stream.state, TENANT, "Plans") == []


def test_adding_a_message_counts_it_and_fills_the_optional_fields_with_empty_values() -> None:
    stream = created()

    payloads = add_message(stream.state, TENANT, message_id="m-1", role="user", content="héllo 👋")
    stream.append(payloads)
    stream.append(
        add_message(stream.state, TENANT, message_id="m-2", role="assistant", content="hi")
    )

    assert payloads == [
        MessageAdded(
            message_id="m-1",
            role="user",
            content="héllo 👋",
            domain_hints=[],
            tier=None,
            tools_invoked=[],
            episode_id=None,
            client=None,
            attributes={},
        )
    ]
    state = stream.state
    assert state is not None
    assert state.message_count == 2
    assert state.updated_at == stream.events[-1].at


def test_deleting_a_thread_marks_it_deleted() -> None:
    stream = created()

    stream.append(delete(stream.state, TENANT))

    assert stream.events[-1].data == ThreadDeleted()
    state = stream.state
    assert state is not None
    assert state.deleted
    assert state.updated_at == stream.events[-1].at


def _commands(
    state: ThreadState | None, tenant_id: str
) -> dict[str, Callable[[], list[DomainEvent]]]:
    return {
        "rename": lambda: rename(state, tenant_id, "New title"),
        "rename to same title": lambda: rename(state, tenant_id, "Plans"),
        "delete": lambda: delete(state, tenant_id),
        "add message": lambda: add_message(
            state, tenant_id, message_id="m", role="user", content="x"
        ),
    }


COMMANDS = sorted(_commands(None, TENANT))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_on_a_deleted_thread_is_not_found(command: str) -> None:
    stream = created("Plans")
    stream.append(delete(stream.state, TENANT))

    with pytest.raises(ThreadNotFound):
        _commands(stream.state, TENANT)[command]()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_on_another_tenants_thread_is_not_found(command: str) -> None:
    stream = created("Plans")

    with pytest.raises(ThreadNotFound):
        _commands(stream.state, OTHER_TENANT)[command]()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_on_a_thread_that_never_existed_is_not_found(command: str) -> None:
    with pytest.raises(ThreadNotFound):
        _commands(None, TENANT)[command]()


def test_not_found_does_not_reveal_whether_the_thread_exists_elsewhere() -> None:
    other = created("Plans")
    deleted = created("Plans")
    deleted.append(delete(deleted.state, TENANT))

    errors = []
    for state, tenant in ((None, TENANT), (other.state, OTHER_TENANT), (deleted.state, TENANT)):
        with pytest.raises(ThreadNotFound) as caught:
            delete(state, tenant)
        errors.append((caught.value.code, caught.value.message, caught.value.details))

    assert errors[0] == errors[1] == errors[2]


@pytest.mark.parametrize(
    "payload",
    [ThreadRenamed(title="x"), ThreadDeleted(), MessageAdded(message_id="m", role="u", content="")],
    ids=lambda p: type(p).__name__,
)
def test_evolve_ignores_a_change_to_a_thread_it_has_not_seen_created(payload: DomainEvent) -> None:
    stream = Stream()
    (event,) = stream.append([payload])

    assert evolve(None, event) is None


def test_evolve_leaves_the_thread_unchanged_by_another_contexts_event() -> None:
    stream = created()
    (foreign,) = Stream().append(
        [KeyCreated(name="k", roles=["viewer"], key_sha256="0" * 64, hint="nome_sk_abcd")]
    )

    assert evolve(stream.state, foreign) == stream.state


def test_folding_the_same_events_twice_gives_equal_states() -> None:
    stream = created()
    stream.append(rename(stream.state, TENANT, "Roadmap"))
    stream.append(add_message(stream.state, TENANT, message_id="m", role="u", content="c"))
    stream.append(delete(stream.state, TENANT))

    assert stream.state == stream.state
