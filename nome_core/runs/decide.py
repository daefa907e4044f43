"""Run decisions: create (with the thread and the account), record a step, cancel."""

from __future__ import annotations

import uuid

from nome_core.accounts import decide as accounts
from nome_core.accounts.plans import plan_of
from nome_core.accounts.state import AccountState
from nome_core.approvals.decide import withdraw
from nome_core.events import Decided, DomainEvent
from nome_core.runs.commands import CancelRun, CreateRun, RecordStep
from nome_core.runs.errors import RunChanged, RunEnded, RunNotFound
from nome_core.runs.events import (
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    Usage,
)
from nome_core.runs.state import RunState
from nome_core.tenants.state import TenantState
from nome_core.threads import decide as threads
from nome_core.threads.state import ThreadState

_INPUT_MESSAGE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650006")


def input_message_id(run_id: str) -> str:
    """The id of the user message that carries a run's input into its thread."""
    return str(uuid.uuid5(_INPUT_MESSAGE, run_id))


def usage(tier: str, input_text: str, output_text: str) -> Usage:
    """Tokens are counted as whitespace-separated words: the same for every provider."""
    tokens_in, tokens_out = len(input_text.split()), len(output_text.split())
    credits = accounts.cost(tier, tokens_in + tokens_out)
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, credits=credits)


def create(
    cmd: CreateRun,
    thread: ThreadState | None,
    tenant: TenantState | None,
    account: AccountState | None,
) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """The thread's events (the input as a user message; the run admitted or queued) and the
    run's first event. Refused when the tenant has no credits left."""
    accounts.check_credits(plan_of(tenant.plan if tenant else "free"), account)
    message = threads.run_message(
        message_id=input_message_id(cmd.run_id),
        role="user",
        content=cmd.input,
        run_id=cmd.run_id,
        client=cmd.client,
        domain_hints=cmd.domain_hints,
        tier=cmd.tier,
        tools_invoked=[],
    )
    threads.live(thread)
    thread_events: list[DomainEvent] = [
        message,
        *threads.admit_run(thread, cmd.run_id, enqueue=cmd.enqueue),
    ]
    created = RunCreated(
        input=cmd.input,
        agent_id=cmd.agent_id,
        tier=cmd.tier,
        domain_hints=cmd.domain_hints,
        client=cmd.client,
        agent=cmd.agent,
        creator_roles=cmd.creator_roles,
    )
    return thread_events, [created]


def live(state: RunState | None) -> RunState:
    if state is None:
        raise RunNotFound()
    return state


def record(cmd: RecordStep, state: RunState | None) -> list[Decided]:
    """A worker's step, if the run is where the worker saw it."""
    if state is None or state.event_count != cmd.seen:
        raise RunChanged()
    return list(cmd.drafts)


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


def cancel(cmd: CancelRun, state: RunState | None) -> list[Decided]:
    run = live(state)
    if run.status == "cancelled":
        return []  # cancelling twice is a no-op
    if run.terminal:
        raise RunEnded(run.status)
    return [
        *withdraw(run.calls, cmd.by, "the run was cancelled"),
        RunCancelled(by=cmd.by, reason=cmd.reason),
    ]
