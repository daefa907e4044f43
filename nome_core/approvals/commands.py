"""Approval commands."""

from __future__ import annotations

from typing import Any

from nome_core.approvals import decide as approvals_decide
from nome_core.commands import Actor, CommandBus, Outcome
from nome_core.eventstore import DomainEvent, Draft
from nome_core.runs import state as runs_state
from nome_core.tools import calls as tool_calls


class ApprovalCommands(CommandBus):
    """Answers to approval requests."""

    async def resolve_approval(
        self,
        actor: Actor,
        *,
        stream_id: str,
        run_id: str | None,
        thread_id: str | None,
        approval_id: str,
        decision: str,
        reason: str | None,
        roles: frozenset[str],
    ) -> Outcome[Any]:
        """Approve, deny or expire an approval; the first resolution wins, the rest get 409."""
        evolve = runs_state.evolve if run_id is not None else tool_calls.evolve
        receipt_id = self.clock.new_id()

        def decide(state: Any) -> list[DomainEvent | Draft]:
            return approvals_decide.resolve(
                state,
                actor.tenant_id,
                approval_id,
                decision=decision,
                by=actor.meta.principal,
                reason=reason,
                roles=roles,
                receipt_id=receipt_id,
                now=self.clock.now(),
                run_id=run_id,
            )

        return await self.execute(
            stream_id, evolve, decide, actor, thread_id=thread_id, run_id=run_id
        )
