"""Run decisions: create (with the thread and the account), record a step, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

from nome_core.accounts import decide as accounts
from nome_core.accounts.state import AccountState
from nome_core.accounts.state import evolve as accounts_evolve
from nome_core.approvals.decide import withdraw
from nome_core.events import Decided, DomainEvent, payload, unrecorded
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
from nome_core.threads.events import RunAdmitted, ThreadCreated
from nome_core.threads.state import ThreadState
from nome_core.threads.state import evolve as threads_evolve

_INPUT_MESSAGE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650006")


def input_message_id(run_id: str) -> str:
    """The id of the user message that carries a run's input into its thread."""
    return str(uuid.uuid5(_INPUT_MESSAGE, run_id))


def usage(tier: str, input_text: str, output_text: str) -> Usage:
    """Tokens are counted as whitespace-separated words: the same for every provider."""
    tokens_in, tokens_out = len(input_text.split()), len(output_text.split())
    credits = accounts.cost(tier, tokens_in + tokens_out)
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, credits=credits)


def used(state: RunState) -> Usage | None:
    """What a run that ends before completing used: its input and what it said so far;
    nothing if it never started."""
    if state.started_at is None:
        return None
    said = " ".join(m.text for m in state.messages)
    return usage(state.tier, state.input, said)


class Created(NamedTuple):
    run: list[DomainEvent]
    thread: list[DomainEvent]
    account: list[DomainEvent]


def create(
    cmd: CreateRun,
    thread: ThreadState | None,
    tenant: TenantState | None,
    account: AccountState | None,
    *,
    now: str,
    grace_days: float,
) -> Created:
    """The run's first event; the thread's (the input as a user message, the run admitted
    or queued); the account's (the run's reservation and, if its thread admitted it, its
    place in the tenant's run queue or a slot at once). Refused, appending nothing, when
    the tenant's billing is inactive or its available credits are short."""
    accounts.may_start_work(tenant, now, grace_days)
    reserved = accounts.reserve(account, tenant, run_id=cmd.run_id, tier=cmd.tier)
    opened: list[DomainEvent] = []
    if cmd.new_thread is not None:
        opened = [ThreadCreated(title=cmd.new_thread, metadata={})]
        thread = fold_new_thread(opened)
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
    admission = threads.admit_run(thread, cmd.run_id, enqueue=cmd.enqueue)
    thread_events: list[DomainEvent] = [*opened, message, *admission]
    created = RunCreated(
        input=cmd.input,
        agent_id=cmd.agent_id,
        tier=cmd.tier,
        domain_hints=cmd.domain_hints,
        client=cmd.client,
        agent=cmd.agent,
        creator_roles=cmd.creator_roles,
    )
    folded = fold_account(account, reserved)
    slots = accounts.schedule(folded, tenant, admitted=admitted_runs(admission))
    return Created([created], thread_events, [*reserved, *slots])


def admitted_runs(events: Sequence[Decided]) -> list[str]:
    """The runs a thread's events admit (each then waits for one of the tenant's slots)."""
    return [e.run_id for e in map(payload, events) if isinstance(e, RunAdmitted)]


def fold_account(
    account: AccountState | None, events: Sequence[DomainEvent]
) -> AccountState | None:
    """The account as the same commit's earlier events leave it."""
    for event in events:
        account = accounts_evolve(account, unrecorded(event))
    return account


def fold_new_thread(events: list[DomainEvent]) -> ThreadState | None:
    """The thread a run's own commit creates, as its later decisions see it."""
    state: ThreadState | None = None
    for event in events:
        state = threads_evolve(state, unrecorded(event))
    return state


def live(state: RunState | None) -> RunState:
    if state is None:
        raise RunNotFound()
    return state


def record(cmd: RecordStep, state: RunState | None) -> list[Decided]:
    """A worker's step, if the run is where the worker saw it."""
    if state is None or state.event_count != cmd.seen:
        raise RunChanged()
    return list(cmd.drafts)


def start(
    state: RunState, model: str, *, harness: int = 1, thread_seq: int | None = None
) -> list[DomainEvent]:
    if state.status != "pending":
        return []
    return [RunStarted(model=model, harness=harness, thread_seq=thread_seq)]


def complete(state: RunState, output: str) -> list[DomainEvent]:
    if state.terminal:
        raise RunEnded(state.status)
    return [RunCompleted(usage=usage(state.tier, state.input, output), output=output)]


def fail(state: RunState, code: str, message: str) -> list[DomainEvent]:
    if state.terminal:
        raise RunEnded(state.status)
    return [RunFailed(error=ErrorInfo(code=code, message=message), usage=used(state))]


def cancel(cmd: CancelRun, state: RunState | None) -> list[Decided]:
    run = live(state)
    if run.status == "cancelled":
        return []  # cancelling twice is a no-op
    if run.terminal:
        raise RunEnded(run.status)
    return [
        *withdraw(run.calls, cmd.by, "the run was cancelled"),
        RunCancelled(by=cmd.by, reason=cmd.reason, usage=used(run)),
    ]
