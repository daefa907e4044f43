"""Run commands."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from nome_core.agents import state as agents_state
from nome_core.commands import Actor, CommandBus, Outcome, Spec
from nome_core.eventstore import DomainEvent, Draft
from nome_core.runs import decide as runs_decide
from nome_core.runs import state as runs_state
from nome_core.runs.effects import RunChanged, runs_thread_effects
from nome_core.runs.events import AgentSnapshot
from nome_core.threads import decide as threads_decide
from nome_core.threads import state as threads_state


class RunCommands(CommandBus):
    """Runs: created by clients, stepped by workers, cancelled by operators."""

    async def create_run(
        self,
        actor: Actor,
        *,
        thread_id: str,
        input_text: str,
        agent: agents_state.AgentState,
        tier: str | None,
        domain_hints: list[str],
        enqueue: bool,
        creator_roles: list[str],
    ) -> tuple[Outcome[runs_state.RunState | None], bool]:
        """A pending run, its user message in the thread, and its place on the thread; says
        whether the run is the thread's active run now (else it waits in the queue)."""
        run_id, message_id = self.clock.new_id(), self.clock.new_id()
        run_tier = tier or agent.tier
        snapshot = AgentSnapshot(
            provider=agent.provider,
            model=agent.model,
            instructions=agent.instructions,
            tools=agent.tools,
        )

        def decide(states: list[Any]) -> list[list[DomainEvent]]:
            thread = states[0]
            thread_events = threads_decide.add_message(
                thread,
                actor.tenant_id,
                message_id=message_id,
                role="user",
                content=input_text,
                client=actor.meta.client,
                domain_hints=domain_hints,
                tier=run_tier,
                episode_id=run_id,
            ) + threads_decide.start_run(thread, actor.tenant_id, run_id, enqueue=enqueue)
            run_events = runs_decide.create(
                input_text=input_text,
                agent_id=agent.id,
                tier=run_tier,
                domain_hints=domain_hints,
                client=actor.meta.client,
                agent=snapshot,
                creator_roles=creator_roles,
            )
            return [thread_events, run_events]

        thread, run = await self.execute_many(
            [
                Spec(thread_id, threads_state.evolve, thread_id=thread_id),
                Spec(run_id, runs_state.evolve, thread_id=thread_id, run_id=run_id, new=True),
            ],
            decide,
            actor,
        )
        admitted = thread.state is not None and thread.state.active_run_id == run_id
        return run, admitted

    def run(self, run_id: str) -> runs_state.RunState | None:
        return self.load(run_id, runs_state.evolve).state

    async def record_run(
        self, actor: Actor, seen: runs_state.RunState, drafts: Sequence[DomainEvent | Draft]
    ) -> Outcome[runs_state.RunState | None]:
        """Append a worker's step to a run, with what it means for the thread: assistant
        messages and notes appear there, and a run's end frees the thread. Refused if the
        run moved on since the worker looked (a cancel, or another worker)."""

        def decide(states: list[Any]) -> list[list[DomainEvent | Draft]]:
            run, thread = states
            if run is None or run.event_count != seen.event_count:
                raise RunChanged()
            effects: list[DomainEvent | Draft] = [
                *runs_thread_effects(run, thread, drafts, actor.tenant_id)
            ]
            return [list(drafts), effects]

        run, _ = await self.execute_many(
            [
                Spec(seen.id, runs_state.evolve, thread_id=seen.thread_id, run_id=seen.id),
                Spec(seen.thread_id, threads_state.evolve, thread_id=seen.thread_id),
            ],
            decide,
            actor,
        )
        return run

    async def cancel_run(
        self, actor: Actor, run_id: str, *, by: str | None, reason: str | None
    ) -> Outcome[runs_state.RunState | None]:
        run = await asyncio.to_thread(self.run, run_id)
        run = runs_decide.live(run, actor.tenant_id)
        cancel = runs_decide.cancel(run, actor.tenant_id, by, reason)
        if not cancel:
            return Outcome(run, [])
        return await self.record_run(actor, run, cancel)
