"""What a run's steps mean for its thread (decided together with the step, one transaction)."""

from __future__ import annotations

from collections.abc import Sequence

from nome_core.errors import Conflict
from nome_core.eventstore import DomainEvent, Draft
from nome_core.runs.events import (
    MessageCompleted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    ToolCompleted,
)
from nome_core.runs.state import Call, RunState
from nome_core.threads import decide as threads_decide
from nome_core.threads.events import MessageAdded
from nome_core.threads.state import ThreadState


class RunChanged(Conflict):
    """The run moved on since the worker read it; it must look again."""

    def __init__(self) -> None:
        super().__init__("the run changed since it was read")


def runs_thread_effects(
    run: RunState,
    thread: ThreadState | None,
    drafts: Sequence[DomainEvent | Draft],
    tenant_id: str,
) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    live = thread is not None and not thread.deleted and thread.tenant_id == tenant_id
    tools_invoked = [c.tool for c in run.calls]
    for draft in drafts:
        data = draft.data if isinstance(draft, Draft) else draft
        match data:
            case MessageCompleted(message_id=message_id, role="assistant", content=content) if live:
                events.append(
                    MessageAdded(
                        message_id=message_id,
                        role="assistant",
                        content=content,
                        domain_hints=run.domain_hints,
                        tier=run.tier,
                        tools_invoked=tools_invoked,
                        episode_id=run.id,
                        client=run.client,
                    )
                )
            case ToolCompleted() as completed if live:
                events.extend(note_effects(run.calls, completed, episode_id=run.id))
            case RunCompleted() | RunFailed() | RunCancelled():
                events.extend(threads_decide.release_run(thread, run.id))
    return events


def note_effects(
    calls: Sequence[Call], completed: ToolCompleted, *, episode_id: str | None
) -> list[DomainEvent]:
    """A `thread.note` lands with the receipt that reports it: never twice, never lost."""
    call = next((c for c in calls if c.call_id == completed.call_id), None)
    receipt = completed.receipt
    if call is None or call.tool != "thread.note" or receipt.status != "ok":
        return []
    return [
        MessageAdded(
            message_id=str(receipt.result["note_id"]),
            role="system",
            content=str(call.arguments.get("text", "")),
            tools_invoked=["thread.note"],
            episode_id=episode_id,
        )
    ]
