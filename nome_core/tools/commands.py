"""Tool policy and direct-call commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nome_core.commands import Actor, CommandBus, Outcome, Spec
from nome_core.eventstore import DomainEvent, Draft, Event, Meta
from nome_core.runs.effects import note_effects
from nome_core.runs.events import ToolCompleted
from nome_core.threads import state as threads_state
from nome_core.tools import calls as tool_calls
from nome_core.tools import decide as tools_decide
from nome_core.tools import state as tools_state
from nome_core.tools.policy import Policy, default_policy


class ToolCommands(CommandBus):
    """The policy matrix and direct tool calls."""

    def policy(self, tenant_id: str, tool: str) -> Policy:
        """The tool's effective policy for the tenant: its latest change, or the default."""
        stream = tools_state.policy_stream_id(tenant_id, tool)
        return self.load(stream, tools_state.evolve).state or default_policy(tool)

    async def set_policy(self, actor: Actor, proposed: Policy) -> Outcome[Policy | None]:
        stream = tools_state.policy_stream_id(actor.tenant_id, proposed.tool)

        def decide(state: Policy | None) -> list[DomainEvent]:
            return tools_decide.change(state or default_policy(proposed.tool), proposed)

        outcome = await self.execute(stream, tools_state.evolve, decide, actor)
        state = outcome.state or default_policy(proposed.tool)
        return Outcome(state, outcome.events)

    async def record_direct_call(
        self,
        actor: Actor,
        call_id: str,
        thread_id: str | None,
        drafts: Sequence[DomainEvent | Draft],
    ) -> Outcome[tool_calls.DirectCall | None]:
        """A direct call's events; a `thread.note` lands in its thread in the same commit."""
        return await self.record_call_step(actor, call_id, thread_id, drafts, new=True)

    async def record_call_step(
        self,
        actor: Actor,
        call_id: str,
        thread_id: str | None,
        drafts: Sequence[DomainEvent | Draft],
        *,
        new: bool = False,
    ) -> Outcome[tool_calls.DirectCall | None]:
        specs = [Spec(call_id, tool_calls.evolve, thread_id=thread_id, new=new)]
        if thread_id is not None:
            specs.append(Spec(thread_id, threads_state.evolve, thread_id=thread_id))

        def decide(states: list[Any]) -> list[list[DomainEvent | Draft]]:
            decided: list[list[DomainEvent | Draft]] = [list(drafts)]
            if thread_id is None:
                return decided
            thread = states[1]
            live = thread is not None and not thread.deleted and thread.tenant_id == actor.tenant_id
            folded = states[0]
            for draft in drafts:
                folded = tool_calls.evolve(folded, _as_event(draft))
            effects: list[DomainEvent | Draft] = []
            for draft in drafts:
                data = draft.data if isinstance(draft, Draft) else draft
                if live and folded is not None and isinstance(data, ToolCompleted):
                    effects.extend(note_effects(folded.calls, data, episode_id=None))
            decided.append(effects)
            return decided

        outcome, *_ = await self.execute_many(specs, decide, actor)
        return outcome

    def direct_call(self, call_id: str) -> tool_calls.DirectCall | None:
        return self.load(call_id, tool_calls.evolve).state


def _as_event(draft: DomainEvent | Draft) -> Event:
    """A draft as an unrecorded event, to fold ahead of appending (no ids are read)."""
    data, work_item = (
        (draft.data, draft.work_item_id) if isinstance(draft, Draft) else (draft, None)
    )
    return Event(
        id="",
        type=data.type,
        tenant_id="",
        stream_id="",
        thread_id=None,
        run_id=None,
        work_item_id=work_item,
        seq=0,
        at="",
        data=data,
        hash="",
        prev_hash=None,
        meta=Meta(),
    )
