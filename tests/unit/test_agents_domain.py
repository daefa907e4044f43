"""Agents, pure: created, updated field by field, deleted; a deleted or missing agent is not
found; each tenant's default agent is made once, by whoever needs it first."""

from __future__ import annotations

import pytest

from nome_core.agents.commands import (
    AgentCommand,
    CreateAgent,
    DeleteAgent,
    EnsureDefaultAgent,
    UpdateAgent,
)
from nome_core.agents.decide import AGENTS, DEFAULT_INSTRUCTIONS, decide, live
from nome_core.agents.errors import AgentNotFound
from nome_core.agents.events import AgentCreated, AgentDeleted, AgentUpdated
from nome_core.agents.state import AgentState, default_agent_id, evolve
from nome_core.bus import owned_by
from nome_core.events import DomainEvent
from tests.support.streams import MemoryStream

TENANT = "00000000-0000-4000-8000-0000000000a1"
OTHER_TENANT = "00000000-0000-4000-8000-0000000000a2"
AGENT = "00000000-0000-4000-8000-0000000000e1"

CREATE = CreateAgent(
    agent_id=AGENT,
    name="Researcher",
    instructions="Cite sources.",
    provider="scripted",
    model="scripted-1",
    tools=["clock.now", "math.evaluate"],
    tier="deep",
)


def agent_stream(*commands: AgentCommand) -> MemoryStream[AgentState]:
    """An agent's log after each command, decided on the state before it."""
    stream: MemoryStream[AgentState] = MemoryStream(evolve, stream_id=AGENT, tenant_id=TENANT)
    for cmd in commands:
        stream.append(decide(cmd, stream.state))
    return stream


def test_creating_an_agent_records_its_whole_configuration() -> None:
    assert decide(CREATE, None) == [
        AgentCreated(
            name="Researcher",
            instructions="Cite sources.",
            provider="scripted",
            model="scripted-1",
            tools=["clock.now", "math.evaluate"],
            tier="deep",
        )
    ]


def test_a_created_agent_takes_its_id_tenant_and_times_from_the_event() -> None:
    stream = agent_stream(CREATE)
    at = stream.events[0].at

    assert stream.live() == AgentState(
        id=AGENT,
        tenant_id=TENANT,
        name="Researcher",
        instructions="Cite sources.",
        provider="scripted",
        model="scripted-1",
        tools=["clock.now", "math.evaluate"],
        tier="deep",
        created_at=at,
        updated_at=at,
    )


def test_an_update_changes_the_fields_it_names_and_keeps_every_other() -> None:
    stream = agent_stream(CREATE)

    (updated,) = decide(UpdateAgent(agent_id=AGENT, name="Analyst", tools=[]), stream.state)

    assert updated == AgentUpdated(
        name="Analyst",
        instructions="Cite sources.",
        provider="scripted",
        model="scripted-1",
        tools=[],
        tier="deep",
    )


def test_an_update_of_every_field_replaces_them_all() -> None:
    stream = agent_stream(
        CREATE,
        UpdateAgent(
            agent_id=AGENT,
            name="N",
            instructions="I",
            provider="openai",
            model="gpt",
            tools=["http.fetch"],
            tier="fast",
        ),
    )
    state = stream.live()

    assert (state.name, state.instructions, state.provider, state.model) == (
        "N",
        "I",
        "openai",
        "gpt",
    )
    assert (state.tools, state.tier) == (["http.fetch"], "fast")
    assert state.created_at == stream.events[0].at
    assert state.updated_at == stream.events[1].at > state.created_at


def test_an_empty_update_records_the_agent_as_it_is() -> None:
    stream = agent_stream(CREATE, UpdateAgent(agent_id=AGENT))
    first = stream.events[0].data

    assert isinstance(first, AgentCreated)
    assert stream.events[1].data == AgentUpdated(
        **{f: getattr(first, f) for f in first.__struct_fields__}
    )


def test_deleting_an_agent_marks_it_deleted_at_the_events_time() -> None:
    stream = agent_stream(CREATE, DeleteAgent(agent_id=AGENT))

    assert stream.events[-1].data == AgentDeleted()
    state = stream.live()
    assert state.deleted and state.updated_at == stream.events[-1].at
    assert state.name == "Researcher"


def deleted() -> AgentState:
    return agent_stream(CREATE, DeleteAgent(agent_id=AGENT)).live()


@pytest.mark.parametrize(
    "command",
    [UpdateAgent(agent_id=AGENT, name="x"), DeleteAgent(agent_id=AGENT)],
    ids=["update", "delete"],
)
@pytest.mark.parametrize(
    "state",
    [None, deleted(), owned_by(agent_stream(CREATE).live(), OTHER_TENANT)],
    ids=["never existed", "deleted", "another tenant's"],
)
def test_changing_an_agent_that_is_not_there_is_not_found(
    command: AgentCommand, state: AgentState | None
) -> None:
    with pytest.raises(AgentNotFound):
        decide(command, state)


def test_only_a_live_agent_is_live() -> None:
    agent = agent_stream(CREATE).live()

    assert live(agent) is agent
    for gone in (None, deleted()):
        with pytest.raises(AgentNotFound):
            live(gone)


ENSURE = EnsureDefaultAgent(
    agent_id=default_agent_id(TENANT),
    provider="scripted",
    model="scripted-1",
    tools=["clock.now", "thread.note"],
)


def test_the_default_agent_is_made_with_the_default_instructions_at_the_standard_tier() -> None:
    assert decide(ENSURE, None) == [
        AgentCreated(
            name="default",
            instructions=DEFAULT_INSTRUCTIONS,
            provider="scripted",
            model="scripted-1",
            tools=["clock.now", "thread.note"],
            tier="standard",
        )
    ]


def test_the_default_agent_is_made_once_whoever_asks_again() -> None:
    stream = agent_stream(ENSURE)
    other_provider = EnsureDefaultAgent(
        agent_id=ENSURE.agent_id, provider="openai", model="gpt", tools=[]
    )

    assert decide(ENSURE, stream.state) == []
    assert decide(other_provider, stream.state) == []
    assert stream.live().provider == "scripted"


def test_each_tenant_has_its_own_fixed_default_agent_id() -> None:
    assert default_agent_id(TENANT) == default_agent_id(TENANT)
    assert default_agent_id(TENANT) != default_agent_id(OTHER_TENANT)


def test_only_creating_an_agent_starts_a_new_stream() -> None:
    commands: list[AgentCommand] = [
        CREATE,
        UpdateAgent(agent_id=AGENT),
        DeleteAgent(agent_id=AGENT),
        ENSURE,
    ]

    assert [AGENTS.creates(c) for c in commands] == [True, False, False, False]
    assert [AGENTS.stream_of(c) for c in commands] == [AGENT, AGENT, AGENT, ENSURE.agent_id]


@pytest.mark.parametrize(
    "payload",
    [
        AgentUpdated(name="n", instructions="", provider="", model="", tools=[], tier=""),
        AgentDeleted(),
    ],
    ids=["update", "delete"],
)
def test_a_change_to_an_agent_never_created_folds_to_nothing(payload: DomainEvent) -> None:
    stream: MemoryStream[AgentState] = MemoryStream(evolve, stream_id=AGENT, tenant_id=TENANT)

    (event,) = stream.append([payload])

    assert evolve(None, event) is None
