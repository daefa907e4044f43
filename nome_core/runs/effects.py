"""What a run's steps mean beyond the run, decided with the step and appended in the same
transaction: its answers and notes appear in its thread, its end frees the thread and
charges the tenant's account."""

from __future__ import annotations

from collections.abc import Sequence

from nome_core.accounts import decide as accounts
from nome_core.accounts.state import AccountState
from nome_core.events import Decided, DomainEvent, payload
from nome_core.runs.decide import admitted_runs, fold_account
from nome_core.runs.events import (
    TERMINAL_EVENTS,
    MessageCompleted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    Usage,
)
from nome_core.runs.state import RunState
from nome_core.tenants.state import TenantState
from nome_core.threads import decide as threads
from nome_core.threads.state import ThreadState
from nome_core.tools.events import ToolCompleted
from nome_core.tools.notes import note_effects


def ends(drafts: Sequence[Decided]) -> bool:
    """Whether a step ends the run (and so touches the account)."""
    return any(isinstance(payload(d), TERMINAL_EVENTS) for d in drafts)


def thread_effects(
    run: RunState, thread: ThreadState | None, drafts: Sequence[Decided]
) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    live = thread is not None and not thread.deleted
    tools_invoked = [c.tool for c in run.calls]
    for draft in drafts:
        match payload(draft):
            case MessageCompleted(message_id=message_id, role="assistant", content=content) if live:
                events.append(
                    threads.run_message(
                        message_id=message_id,
                        role="assistant",
                        content=content,
                        run_id=run.id,
                        client=run.client,
                        domain_hints=run.domain_hints,
                        tier=run.tier,
                        tools_invoked=tools_invoked,
                    )
                )
            case ToolCompleted() as completed if live:
                events.extend(note_effects(run.calls, completed, episode_id=run.id))
            case RunCompleted() | RunFailed() | RunCancelled():
                events.extend(threads.release_run(thread, run.id))
    return events


def account_effects(
    run: RunState,
    account: AccountState | None,
    tenant: TenantState | None,
    drafts: Sequence[Decided],
    thread_events: Sequence[Decided],
) -> list[DomainEvent]:
    """A run that ends is charged what it used (capped at its reservation, the rest
    released) and frees its slot; a run its thread admits in the same commit takes its
    place in the tenant's run queue."""
    end = next((e for e in map(payload, drafts) if isinstance(e, TERMINAL_EVENTS)), None)
    if end is None:
        return []
    used = end.usage or Usage()
    charged = accounts.settle(account, run.id, used.credits)
    slots = accounts.schedule(
        fold_account(account, charged),
        tenant,
        admitted=admitted_runs(thread_events),
        ended=[run.id],
    )
    return [*charged, *slots]
