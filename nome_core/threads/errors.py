"""Thread errors."""

from __future__ import annotations

from nome_core.errors import Conflict, NotFound


class ThreadNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such thread")


class RunInProgress(Conflict):
    code = "run_in_progress"

    def __init__(self, active_run_id: str) -> None:
        super().__init__("the thread has an active run", active_run_id=active_run_id)
