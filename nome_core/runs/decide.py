"""Run commands: create, start, finish, fail, cancel."""

from __future__ import annotations

import math

from nome_core.approvals.events import ApprovalResolved
from nome_core.eventstore import Client, DomainEvent, Draft
from nome_core.runs.errors import RunEnded, RunNotFound
from nome_core.runs.events import (
    AgentSnapshot,
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.runs.state import RunState

# Credits per 1,000 tokens by tier; every run costs at least one credit.
CREDITS_PER_1K = {"fast": 1, "standard": 2, "deep": 5}


def usage(tier: str, input_text: str, output_text: str) -> Usage:
    """Tokens are counted as whitespace-separated words: the same for every provider."""
    tokens_in, tokens_out = len(input_text.split()), len(output_text.split())
    rate = CREDITS_PER_1K.get(tier, 2)
    credits = max(1, math.ceil((tokens_in + tokens_out) * rate / 1000))
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, credits=credits)


def create(
    *,
    input_text: str,
    agent_id: str,
    tier: str,
    domain_hints: list[str],
    client: Client,
    agent: AgentSnapshot,
    creator_roles: list[str],
) -> list[DomainEvent]:
    return [
        RunCreated(
            input=input_text,
            agent_id=agent_id,
            tier=tier,
            domain_hints=domain_hints,
            client=client,
            agent=agent,
            creator_roles=creator_roles,
        )
    ]


def live(state: RunState | None, tenant_id: str) -> RunState:
    if state is None or state.tenant_id != tenant_id:
        raise RunNotFound()
    return state


def start(state: RunState, model: str) -> list[DomainEvent]:
    if state.status != "pending":
        return []
    return [RunStarted(model=model)]


def complete(state: RunState, output: str) -> list[DomainEvent]:
    if state.terminal:
        raise RunEnded(state.status)
    return [RunCompleted(usage=usage(state.tier, state.input, output), output=output)]


def fail(state: RunState, code: str, message: str) -> list[DomainEvent]:
    if state.terminal:
        raise RunEnded(state.status)
    return [RunFailed(error=ErrorInfo(code=code, message=message))]


def cancel(
    state: RunState | None, tenant_id: str, by: str | None, reason: str | None
) -> list[DomainEvent | Draft]:
    run = live(state, tenant_id)
    if run.status == "cancelled":
        return []  # cancelling twice is a no-op
    if run.terminal:
        raise RunEnded(run.status)
    # Nobody may answer a cancelled run's questions: close them with it.
    closing: list[DomainEvent | Draft] = [
        Draft(
            ApprovalResolved(
                approval_id=call.approval_id,
                decision="denied",
                by=by,
                reason="the run was cancelled",
            ),
            call.work_item_id,
        )
        for call in run.calls
        if call.approval_status == "pending" and call.approval_id is not None
    ]
    return [*closing, RunCancelled(by=by, reason=reason)]
