"""Run use cases: create a run with its thread and account, record a worker's step with
what it means for the thread and the account, cancel, answer an approval of a run's call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from nome_core.accounts import decide as account_decide
from nome_core.accounts import state as accounts
from nome_core.agents import state as agents
from nome_core.agents.commands import EnsureDefaultAgent
from nome_core.agents.decide import AGENTS
from nome_core.agents.handlers import AgentHandlers
from nome_core.approvals import decide as approvals
from nome_core.approvals.commands import ResolveApproval
from nome_core.bus import Actor, Claim, CommandBus, Outcome, Spec, owned_by
from nome_core.errors import StreamConflict
from nome_core.events import Decided, payload, unrecorded
from nome_core.runs import decide, effects
from nome_core.runs.commands import CancelRun, CreateRun, RecordStep, StartRun
from nome_core.runs.events import AgentSnapshot
from nome_core.runs.state import RunState, evolve
from nome_core.tenants import state as tenants
from nome_core.threads import decide as threads_decide
from nome_core.threads import state as threads
from nome_core.threads.commands import DeleteThread
from nome_core.threads.state import ThreadState


class Started(NamedTuple):
    """A new run, the position of its creation, and whether it may start now: its thread
    admitted it and it holds one of the tenant's run slots (else it waits for either)."""

    run: RunState
    position: int
    runnable: bool


class RunHandlers:
    def __init__(
        self, bus: CommandBus, agents: AgentHandlers, *, billing_grace_days: float = 7.0
    ) -> None:
        self.bus = bus
        self.agents = agents
        self.billing_grace_days = billing_grace_days

    def get(self, tenant_id: str, run_id: str) -> RunState | None:
        return owned_by(self.bus.load(run_id, evolve), tenant_id)  # type: ignore[no-any-return]

    async def start(self, actor: Actor, cmd: StartRun, *, claim: Claim | None = None) -> Started:
        """Create a run of its agent, snapshotting the agent as it is now."""
        agent, ensure = await self.agents.for_run(actor, cmd.agent_id)
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
                context_tokens=agent.context_tokens,
            ),
            tier=cmd.tier or agent.tier,
            domain_hints=cmd.domain_hints,
            enqueue=cmd.enqueue,
            creator_roles=cmd.creator_roles,
            client=cmd.client,
            new_thread=cmd.new_thread,
        )
        return await self.create(actor, create, claim=claim, ensure=ensure)

    async def create(
        self,
        actor: Actor,
        cmd: CreateRun,
        *,
        claim: Claim | None = None,
        ensure: EnsureDefaultAgent | None = None,
    ) -> Started:
        """A pending run, its input in the thread, its place on the thread, its reservation
        and its place in the tenant's run queue (and the tenant's default agent, when this is
        its first run of it); says whether the run may start now."""
        specs = [
            # First: the run is the command's result (an idempotency claim points at it).
            Spec(cmd.run_id, evolve, thread_id=cmd.thread_id, run_id=cmd.run_id, new=True),
            Spec(
                cmd.thread_id,
                threads.evolve,
                thread_id=cmd.thread_id,
                new=cmd.new_thread is not None,
            ),
            # Read, not appended to: the plan, its limits and the billing state.
            Spec(actor.tenant_id, tenants.evolve, read_only=True),
            # The tenant's ledger and run queue: the reservation, the run's place in it.
            Spec(accounts.account_stream_id(actor.tenant_id), accounts.evolve),
        ]
        # The thread it makes counts against `max_threads`.
        quota = Spec(accounts.quota_stream_id(actor.tenant_id), accounts.evolve_quota)
        agent = Spec(cmd.agent_id, agents.evolve)
        specs += [quota] if cmd.new_thread is not None else []
        specs += [agent] if ensure is not None else []
        now = self.bus.clock.now()

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            _, thread, tenant, account, *rest = states
            created = decide.create(
                cmd, thread, tenant, account, now=now, grace_days=self.billing_grace_days
            )
            decided: list[list[Decided]] = [
                [*created.run],
                [*created.thread],
                [],
                [*created.account],
            ]
            if cmd.new_thread is not None:
                counted = account_decide.thread_quota(tenant, rest.pop(0), cmd.thread_id)
                decided.append([*counted])
            if ensure is not None:
                decided.append([*AGENTS.decide(ensure, rest.pop(0))])
            return decided

        run, _, _, account, *_ = await self.bus.execute_many(specs, decide_all, actor, claim=claim)
        assert run.state is not None and run.position is not None
        runnable = account.state is not None and cmd.run_id in account.state.active
        return Started(run.state, run.position, runnable)

    async def record(self, actor: Actor, cmd: RecordStep) -> Outcome[RunState | None]:
        """Append a worker's step to a run, with its thread's and account's share."""
        ends = effects.ends(cmd.drafts)
        specs = [
            Spec(cmd.run_id, evolve, thread_id=cmd.thread_id, run_id=cmd.run_id),
            Spec(cmd.thread_id, threads.evolve, thread_id=cmd.thread_id),
            *(self._account_specs(actor) if ends else []),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            run, thread = states[0], states[1]
            step = decide.record(cmd, run)
            return [step, *self._effects(run, thread, states[2:], step)]

        run, *_ = await self.bus.execute_many(specs, decide_all, actor)
        return run

    async def cancel(self, actor: Actor, cmd: CancelRun) -> Outcome[RunState | None]:
        """Cancel the run as it stands when the cancel is appended: decided inside the bus,
        so a worker's step that got there first only makes the bus decide again, and the
        worker's next step is the one refused. A cancel always wins over a live run."""
        run = decide.live(await asyncio.to_thread(self.get, actor.tenant_id, cmd.run_id))
        specs = [
            Spec(run.id, evolve, thread_id=run.thread_id, run_id=run.id),
            Spec(run.thread_id, threads.evolve, thread_id=run.thread_id),
            *self._account_specs(actor),
        ]

        def decide_all(states: list[Any]) -> list[list[Decided]]:
            fresh, thread = decide.live(states[0]), states[1]
            steps = decide.cancel(cmd, fresh)
            return [steps, *self._effects(fresh, thread, states[2:], steps)]

        outcome, *_ = await self.bus.execute_many(specs, decide_all, actor)
        return outcome

    @staticmethod
    def _account_specs(actor: Actor) -> list[Spec]:
        """What a run's end touches beyond its thread: the tenant's limits (read) and its
        ledger and run queue."""
        return [
            Spec(actor.tenant_id, tenants.evolve, read_only=True),
            Spec(accounts.account_stream_id(actor.tenant_id), accounts.evolve),
        ]

    @staticmethod
    def _effects(
        run: RunState, thread: ThreadState | None, rest: list[Any], steps: Sequence[Decided]
    ) -> list[list[Decided]]:
        """The thread's share of a step and, if `rest` holds the tenant and its account
        (the step ends the run), the account's."""
        thread_events = effects.thread_effects(run, thread, steps)
        if not rest:
            return [[*thread_events]]
        tenant, account = rest
        charged = effects.account_effects(run, account, tenant, steps, thread_events)
        return [[*thread_events], [], [*charged]]

    async def delete_thread(self, actor: Actor, cmd: DeleteThread) -> Outcome[ThreadState | None]:
        """Delete a thread and stop its runs in the same commit: its active and queued runs
        are cancelled and their pending approvals withdrawn, so the next step of a worker
        on any of them (a tool's `tool.started` included) fails its version check and no
        tool of theirs starts after the deletion."""
        for _ in range(self.bus.attempts):
            loaded = await asyncio.to_thread(self.bus.load, cmd.thread_id, threads.evolve)
            thread = threads_decide.live(owned_by(loaded, actor.tenant_id))
            # Queued runs first, the active one last: releasing it then admits nobody.
            run_ids = [*thread.queued_run_ids, *filter(None, [thread.active_run_id])]
            specs = [
                *(Spec(r, evolve, thread_id=cmd.thread_id, run_id=r) for r in run_ids),
                *self._account_specs(actor),
                Spec(accounts.quota_stream_id(actor.tenant_id), accounts.evolve_quota),
                # Last, so the thread's outcome carries the command's last position.
                Spec(cmd.thread_id, threads.evolve, thread_id=cmd.thread_id),
            ]

            def decide_all(states: list[Any], run_ids: list[str] = run_ids) -> list[list[Decided]]:
                *runs, tenant, account, _, current = states
                current = threads_decide.live(current)
                if [*current.queued_run_ids, *filter(None, [current.active_run_id])] != run_ids:
                    raise _RunsMoved()
                decided: list[list[Decided]] = []
                thread_events: list[Decided] = []
                charged: list[Decided] = []
                for run in runs:
                    steps: list[Decided] = []
                    if run is not None and not run.terminal:
                        stop = CancelRun(
                            run_id=run.id, by=actor.meta.principal, reason=THREAD_DELETED
                        )
                        steps = decide.cancel(stop, run)
                    decided.append(steps)
                    released = effects.thread_effects(run, current, steps) if run else []
                    for event in released:
                        current = threads.evolve(current, unrecorded(event))
                    thread_events += released
                    if run is not None:
                        ledger = decide.fold_account(account, [*map(payload, charged)])
                        charged += effects.account_effects(run, ledger, tenant, steps, released)
                thread_events += threads_decide.decide(cmd, current)
                freed = account_decide.free_quota("threads", [cmd.thread_id])
                return [*decided, [], charged, [*freed], thread_events]

            try:
                *_, outcome = await self.bus.execute_many(specs, decide_all, actor)
            except _RunsMoved:
                continue  # a run was admitted or queued meanwhile: stop that one too
            return outcome
        raise StreamConflict("the thread's runs kept changing")

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


THREAD_DELETED = "the thread was deleted"


class _RunsMoved(Exception):
    """The thread's runs changed between reading it and deciding: read it again."""


def step_of(seen: RunState, drafts: Sequence[Decided]) -> RecordStep:
    """A step decided on the run as it was seen."""
    return RecordStep(
        run_id=seen.id, thread_id=seen.thread_id, seen=seen.event_count, drafts=drafts
    )
