"""Run use cases: create a run with its thread and account, record a worker's step with
what it means for the thread and the account, cancel, answer an approval of a run's call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from nome_core.accounts import state as accounts
from nome_core.agents.handlers import AgentHandlers
from nome_core.approvals import decide as approvals
from nome_core.approvals.commands import ResolveApproval
from nome_core.bus import Actor, CommandBus, Outcome, Spec, owned_by
from nome_core.events import Decided
from nome_core.runs import decide, effects
from nome_core.runs.commands import CancelRun, CreateRun, RecordStep, StartRun
from nome_core.runs.events import AgentSnapshot
from nome_core.runs.state import RunState, evolve
from nome_core.tenants import state as tenants
from nome_core.threads import state as threads


class Started(NamedTuple):
    """A new run, the position of its creation, and whether it is its thread's active run
    now (else it waits in the thread's queue)."""

    run: RunState
    position: int
    admitted: bool


class RunHandlers:
    def __init__(self, bus: CommandBus, agents: AgentHandlers) -> None:
        self.bus = bus
        self.agents = agents

    def get(self, tenant_id: str, run_id: str) -> RunState | None:
        return owned_by(self.bus.load(run_id, evolve), tenant_id)  # type: ignore[no-any-return]

    async def start(self, actor: Actor, cmd: StartRun) -> Started:
        """Create a run of its agent, snapshotting the agent as it is now."""
        agent = await self.agents.for_run(actor, cmd.agent_id)
        create = CreateRun(
            run_id=cmd.run_id,
            thread_id=cmd.thread_id,
            input=cmd.input,
            agent_id=agent.id,
            agent=AgentSnapshot(
                provider=agent.provider,
                model=agent.model,
                instructions=agent.instructions,
                tools=agent.tools,
            ),
            tier=cmd.tier or agent.tier,
            domain_hints=cmd.domain_hints,
            enqueue=cmd.enqueue,
            creator_roles=cmd.creator_roles,
            client=cmd.client,
        )
        return await self.create(actor, create)

    async def create(self, actor: Actor, cmd: CreateRun) -> Started:
        """A pending run, its input in the thread, its place on the thread; says whether
        the run is the thread's active run now (else it waits in the thread's queue)."""
        specs = [
            Spec(cmd.thread_id, threads.evolve, thread_id=cmd.thread_id),
            Spec(cmd.run_id, evolve, thread_id=cmd.thread_id, run_id=cmd.run_id, new=True),
            # Read, not appended to: the plan and what the tenant's runs have consumed.
            Spec(actor.tenant_id, tenants.evolve, read_only=True),
            Spec(accounts.account_stream_id(actor.tenant_id), accounts.evolve, read_only=True),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            thread, _, tenant, account = states
            thread_events, run_events = decide.create(cmd, thread, tenant, account)
            return [[*thread_events], [*run_events], [], []]

        thread, run, *_ = await self.bus.execute_many(specs, decide_all, actor)
        assert run.state is not None and run.position is not None
        admitted = thread.state is not None and thread.state.active_run_id == cmd.run_id
        return Started(run.state, run.position, admitted)

    async def record(self, actor: Actor, cmd: RecordStep) -> Outcome[RunState | None]:
        """Append a worker's step to a run, with its thread's and account's share."""
        ends = effects.ends(cmd.drafts)
        specs = [
            Spec(cmd.run_id, evolve, thread_id=cmd.thread_id, run_id=cmd.run_id),
            Spec(cmd.thread_id, threads.evolve, thread_id=cmd.thread_id),
        ]
        if ends:
            specs.append(Spec(accounts.account_stream_id(actor.tenant_id), accounts.evolve))

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            run, thread = states[0], states[1]
            step = decide.record(cmd, run)
            decided: list[list[Decided]] = [step, [*effects.thread_effects(run, thread, step)]]
            if ends:
                decided.append([*effects.account_effects(run, step)])
            return decided

        run, *_ = await self.bus.execute_many(specs, decide_all, actor)
        return run

    async def cancel(self, actor: Actor, cmd: CancelRun) -> Outcome[RunState | None]:
        run = decide.live(await asyncio.to_thread(self.get, actor.tenant_id, cmd.run_id))
        steps = decide.cancel(cmd, run)
        if not steps:
            return Outcome(run, [])
        return await self.record(actor, step_of(run, steps))

    async def resolve(self, actor: Actor, cmd: ResolveApproval) -> Outcome[RunState | None]:
        """Answer an approval of one of the run's calls; its worker picks the run up again."""
        return await self.bus.execute(
            cmd.stream_id,
            evolve,
            lambda state: approvals.resolve(cmd, state, actor.meta.principal),
            actor,
            thread_id=cmd.thread_id,
            run_id=cmd.run_id,
        )


def step_of(seen: RunState, drafts: Sequence[Decided]) -> RecordStep:
    """A step decided on the run as it was seen."""
    return RecordStep(
        run_id=seen.id, thread_id=seen.thread_id, seen=seen.event_count, drafts=drafts
    )
