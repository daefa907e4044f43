"""Thread commands."""

from __future__ import annotations

from typing import Any

from nome_core.commands import Actor, CommandBus, Outcome
from nome_core.threads import decide as threads_decide
from nome_core.threads import state as threads_state


class ThreadCommands(CommandBus):
    """Threads and their messages."""

    async def create_thread(
        self, actor: Actor, title: str, metadata: dict[str, str]
    ) -> Outcome[threads_state.ThreadState | None]:
        thread_id = self.clock.new_id()
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda _: threads_decide.create(title, metadata),
            actor,
            new=True,
            thread_id=thread_id,
        )

    async def rename_thread(
        self, actor: Actor, thread_id: str, title: str
    ) -> Outcome[threads_state.ThreadState | None]:
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.rename(state, actor.tenant_id, title),
            actor,
            thread_id=thread_id,
        )

    async def delete_thread(
        self, actor: Actor, thread_id: str
    ) -> Outcome[threads_state.ThreadState | None]:
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.delete(state, actor.tenant_id),
            actor,
            thread_id=thread_id,
        )

    async def add_message(
        self, actor: Actor, thread_id: str, **message: Any
    ) -> Outcome[threads_state.ThreadState | None]:
        message_id = self.clock.new_id()
        return await self.execute(
            thread_id,
            threads_state.evolve,
            lambda state: threads_decide.add_message(
                state, actor.tenant_id, message_id=message_id, **message
            ),
            actor,
            thread_id=thread_id,
        )

    def thread(self, thread_id: str) -> threads_state.ThreadState | None:
        return self.load(thread_id, threads_state.evolve).state
