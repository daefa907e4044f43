"""The conversation a model is sent for one turn (API.md §4): the agent's instructions, the
thread's history, the run's input and what the run has said and called so far.

The history is the thread as it stood when the run started (`run.started.thread_seq`):
its user and system messages in order, and every run that had ended by then in the place
of its input, as that run's turns (its text and its tool calls, each call followed by its
result, as Chat Completions pairs them). A thread's messages and a finished run's stream
never change, so what was sent is rebuilt from the log alone.

The agent's `context_tokens` bounds it, tokens counted as words as everywhere else
(runs/decide.usage): the instructions, the input and the run's own turns are always sent;
history fills what is left, newest first, and a turn that does not fit ends it, so the
oldest turns are dropped first and a tool call never goes without its result.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from nome_core.agents.state import DEFAULT_CONTEXT_TOKENS
from nome_core.bus import CommandBus
from nome_core.events import Event
from nome_core.runs.decide import input_message_id
from nome_core.runs.scripted import outcome_line
from nome_core.runs.state import RunState, evolve
from nome_core.threads import state as threads
from nome_core.threads.events import MessageAdded, RunReleased

__all__ = ["DEFAULT_CONTEXT_TOKENS", "ChatMessage", "RunContext", "assemble"]


class ToolCallOut(msgspec.Struct, frozen=True, kw_only=True):
    """A call as the model made it."""

    id: str
    tool: str
    arguments: Any


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the conversation, whatever the provider's wire format."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    tool_calls: tuple[ToolCallOut, ...] = ()
    tool_call_id: str | None = None


# Messages that are sent together or not at all: an assistant turn with its calls' results.
Unit = tuple[ChatMessage, ...]


class EndedRun(msgspec.Struct, frozen=True):
    """Where an earlier run of the thread goes in the history: at its input."""

    run_id: str
    input: str


def tokens(unit: Sequence[ChatMessage]) -> int:
    """Words, as `runs.decide.usage` counts them; a call counts its name and arguments."""
    count = 0
    for message in unit:
        count += len((message.content or "").split())
        for call in message.tool_calls:
            count += 1 + len(json.dumps(call.arguments, ensure_ascii=False).split())
    return count


def run_units(state: RunState) -> list[Unit]:
    """A run's turns in order: each round's text and the calls it made that have an outcome,
    each call followed by its result."""
    texts = {m.message_id: m.text for m in state.messages if m.completed}
    calls = {c.call_id: c for c in state.calls}
    units: list[Unit] = []
    for round_ in state.rounds:
        done = [calls[c] for c in round_.call_ids if c in calls and calls[c].receipt is not None]
        content = texts.get(round_.message_id) if round_.message_id else None
        if not done and not content:
            continue
        assistant = ChatMessage(
            role="assistant",
            content=content or None,
            tool_calls=tuple(
                ToolCallOut(id=c.call_id, tool=c.tool, arguments=c.arguments) for c in done
            ),
        )
        results = tuple(
            ChatMessage(
                role="tool", content=outcome_line(c.tool, c.receipt), tool_call_id=c.call_id
            )
            for c in done
        )
        units.append((assistant, *results))
    return units


# A message no run wrote, by its role; anything else a client wrote is the user's.
_PEOPLES_ROLES: dict[str, Literal["user", "system", "assistant"]] = {
    "system": "system",
    "assistant": "assistant",
}


def history_slots(
    thread_events: Sequence[Event], *, upto: int, run_id: str
) -> list[ChatMessage | EndedRun]:
    """The thread up to seq `upto`, as the run `run_id` sees it: messages from people in
    order, and each run that had ended by then at its input. A run's own answers and notes
    are its turns; the input of a run that had not ended yet is a question still open."""
    seen = [e for e in thread_events if e.seq <= upto]
    ended = {e.data.run_id for e in seen if isinstance(e.data, RunReleased)}
    slots: list[ChatMessage | EndedRun] = []
    for event in seen:
        added = event.data
        if not isinstance(added, MessageAdded):
            continue
        episode = added.episode_id
        if episode is None:
            # A thread made with a conversation carried over holds what an assistant said
            # there too (threads.commands.HistoryMessage); runs' own answers have an episode.
            role = _PEOPLES_ROLES.get(added.role, "user")
            slots.append(ChatMessage(role=role, content=added.content))
        elif (
            episode != run_id and episode in ended and added.message_id == input_message_id(episode)
        ):
            slots.append(EndedRun(episode, added.content))
    return slots


def assemble(state: RunState, history: Sequence[Unit]) -> list[ChatMessage]:
    """Instructions, history, the input and the run's own turns, in that order."""
    system = ChatMessage(role="system", content=state.agent.instructions)
    messages = [system]
    for unit in history:
        messages.extend(unit)
    messages.append(ChatMessage(role="user", content=state.input))
    for unit in run_units(state):
        messages.extend(unit)
    return messages


def fit(
    slots: Sequence[ChatMessage | EndedRun],
    turns_of: Callable[[str], list[Unit]],
    room: int,
) -> list[Unit]:
    """The newest history that fits in `room` tokens, oldest first. Walks back from the
    newest slot (an ended run's turns come from `turns_of`, asked newest first) and stops at
    the first unit that does not fit, so the oldest are dropped and no unit is split."""
    kept: list[Unit] = []
    for slot in reversed(slots):
        if isinstance(slot, EndedRun):
            units = [(ChatMessage(role="user", content=slot.input),), *turns_of(slot.run_id)]
        else:
            units = [(slot,)]
        for unit in reversed(units):
            cost = tokens(unit)
            if cost > room:
                return kept[::-1]
            room -= cost
            kept.append(unit)
    return kept[::-1]


def room_for_history(state: RunState) -> int:
    """What the agent's budget leaves for history once the run's own part is counted."""
    budget = state.agent.context_tokens or DEFAULT_CONTEXT_TOKENS
    own = [
        (ChatMessage(role="system", content=state.agent.instructions),),
        (ChatMessage(role="user", content=state.input),),
        *run_units(state),
    ]
    return budget - sum(tokens(unit) for unit in own)


class RunContext:
    """The live history port: reads the thread and its ended runs from the log, once per
    run (both are fixed from the run's start), newest first until the budget is spent."""

    def __init__(self, bus: CommandBus, *, cached_runs: int = 256, batch: int = 8) -> None:
        self.bus = bus
        self.batch = batch
        self._slots: OrderedDict[str, list[ChatMessage | EndedRun]] = OrderedDict()
        self._runs: OrderedDict[str, list[Unit]] = OrderedDict()
        self._cached = cached_runs
        self._lock = threading.Lock()

    async def thread_seq(self, state: RunState) -> int | None:
        thread = await asyncio.to_thread(self.bus.load, state.thread_id, threads.evolve)
        return thread.seq if thread is not None else None

    async def conversation(self, state: RunState) -> list[ChatMessage]:
        if state.thread_seq is None:
            return assemble(state, [])  # started before history was recorded: none
        history = await asyncio.to_thread(self._history, state, room_for_history(state))
        return assemble(state, history)

    def _history(self, state: RunState, room: int) -> list[Unit]:
        slots = self._slots_of(state)
        ended = [s.run_id for s in slots if isinstance(s, EndedRun)]
        where = {run_id: at for at, run_id in enumerate(ended)}

        def turns_of(run_id: str) -> list[Unit]:
            with self._lock:
                known = self._runs.get(run_id)
            if known is not None:
                return known
            # This run and the next older ones in one read: the walk goes on to them.
            at = where[run_id]
            self._load_runs(ended[max(0, at - self.batch + 1) : at + 1])
            with self._lock:
                return self._runs.get(run_id, [])

        return fit(slots, turns_of, room)

    def _slots_of(self, state: RunState) -> list[ChatMessage | EndedRun]:
        with self._lock:
            known = self._slots.get(state.id)
        if known is not None:
            return known
        assert state.thread_seq is not None
        events = self.bus.store.load_many([(state.thread_id, 0)]).get(state.thread_id, [])
        slots = history_slots(events, upto=state.thread_seq, run_id=state.id)
        self._remember(self._slots, state.id, slots)
        return slots

    def _load_runs(self, run_ids: list[str]) -> None:
        with self._lock:
            missing = [r for r in run_ids if r not in self._runs]
        if not missing:
            return
        streams = self.bus.store.load_many([(r, 0) for r in missing])
        for run_id in missing:
            folded: RunState | None = None
            for event in streams.get(run_id, []):
                folded = evolve(folded, event)
            self._remember(self._runs, run_id, run_units(folded) if folded else [])

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > self._cached:
                cache.popitem(last=False)
