"""`thread.note`'s effect: the note lands in the thread with the receipt that reports it,
in the same commit, so it is never lost and never added twice (runs and direct calls)."""

from __future__ import annotations

from collections.abc import Sequence

from nome_core.threads.events import MessageAdded
from nome_core.tools.events import ToolCompleted
from nome_core.tools.state import Call


def note_effects(
    calls: Sequence[Call], completed: ToolCompleted, *, episode_id: str | None
) -> list[MessageAdded]:
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
