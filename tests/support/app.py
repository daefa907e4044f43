"""The core application as the tests drive it without a server: built-in tools only (run
by the built-in executor, or by a fake one), the commands a test needs in one call each, a
worker's turn on a run, and time travel over a stream."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Literal, TypeVar

from nome_api.executors.builtin import BuiltinExecutor
from nome_api.worker.providers import ScriptedProvider
from nome_core.application import Actor, Application
from nome_core.approvals.commands import ResolveApproval
from nome_core.bus import Outcome
from nome_core.calls.commands import CallTool
from nome_core.calls.state import DirectCall
from nome_core.clock import Clock
from nome_core.events import Client, Event
from nome_core.runs.commands import CancelRun, StartRun
from nome_core.runs.driver import RunDriver
from nome_core.runs.handlers import Started
from nome_core.runs.harness import Harness
from nome_core.runs.state import RunState
from nome_core.runs.tools import RunTools
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.threads.commands import AddMessage, CreateThread, DeleteThread, RenameThread
from nome_core.threads.state import ThreadState
from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from nome_core.tools.executor import Executor

S = TypeVar("S")


class BuiltinRegistry:
    """Every tenant's tools are the built-ins (no packages installed)."""

    async def get(self, tenant_id: str, name: str) -> ToolSpec | None:
        return BUILTIN_TOOLS.get(name)

    async def specs(self, tenant_id: str) -> list[ToolSpec]:
        return [BUILTIN_TOOLS[name] for name in sorted(BUILTIN_TOOLS)]


def make_app(
    store: EventStore, writer: GroupCommitWriter, clock: Clock, executor: Executor | None = None
) -> Application:
    """The application over the built-in tools, run by `executor` (default: the real ones)."""
    return Application(
        store,
        writer,
        clock,
        registry=BuiltinRegistry(),
        executor=executor or BuiltinExecutor(clock),
    )


def fold(
    store: EventStore, stream_id: str, evolve: Callable[[S | None, Event], S | None], upto: int
) -> S | None:
    """The stream as it stood after event `upto` (uncached)."""
    state: S | None = None
    for event in store.load(stream_id, upto=upto):
        state = evolve(state, event)
    return state


async def create_thread(
    app: Application, actor: Actor, title: str, metadata: dict[str, str]
) -> Outcome[ThreadState | None]:
    cmd = CreateThread(thread_id=app.new_id(), title=title, metadata=metadata)
    return await app.threads.handle(actor, cmd)


async def rename_thread(
    app: Application, actor: Actor, thread_id: str, title: str
) -> Outcome[ThreadState | None]:
    return await app.threads.handle(actor, RenameThread(thread_id=thread_id, title=title))


async def delete_thread(
    app: Application, actor: Actor, thread_id: str
) -> Outcome[ThreadState | None]:
    """Delete a thread as the route does: its active and queued runs stop with it."""
    return await app.runs.delete_thread(actor, DeleteThread(thread_id=thread_id))


async def add_message(
    app: Application, actor: Actor, thread_id: str, content: str, **extra: Any
) -> Outcome[ThreadState | None]:
    cmd = AddMessage(
        thread_id=thread_id,
        message_id=app.new_id(),
        role="user",
        content=content,
        attributes=extra.get("attributes", {}),
    )
    return await app.threads.handle(actor, cmd)


# -- runs, approvals and direct calls ----------------------------------------------------


def scripted_driver(app: Application, **harness: Any) -> RunDriver:
    """A worker's driver with the scripted model. Text is flushed once a turn (at its first
    chunk and at its end), never on a timer, so the same run writes the same events.
    `harness` sets any other of the harness's options (its grace for started calls ...)."""
    provider = ScriptedProvider()
    options: dict[str, Any] = {"flush_chars": 1 << 20, "flush_seconds": 1e9, **harness}
    return RunDriver(
        app.runs, Harness(lambda _: provider, RunTools(app.tools), app.clock, **options)
    )


async def start_run(
    app: Application,
    actor: Actor,
    thread_id: str,
    text: str,
    *,
    enqueue: bool = False,
    roles: Collection[str] = ("member",),
    tier: str | None = None,
    agent_id: str | None = None,
) -> Started:
    """A run of the agent named (default: the tenant's default agent, every built-in tool)."""
    cmd = StartRun(
        run_id=app.new_id(),
        thread_id=thread_id,
        input=text,
        agent_id=agent_id,
        tier=tier,
        domain_hints=[],
        enqueue=enqueue,
        creator_roles=sorted(roles),
        client=Client(),
    )
    return await app.runs.start(actor, cmd)


async def cancel_run(
    app: Application, actor: Actor, run_id: str, by: str | None = "tester"
) -> Outcome[RunState | None]:
    return await app.runs.cancel(actor, CancelRun(run_id=run_id, by=by, reason=None))


async def resolve_approval(
    app: Application,
    actor: Actor,
    *,
    approval_id: str,
    stream_id: str,
    run_id: str | None,
    thread_id: str | None,
    decision: Literal["approved", "denied", "expired"],
    roles: Collection[str] = ("member",),
    reason: str | None = None,
) -> Outcome[Any]:
    """Answer an approval as the route (or the expiry job) does, given where its call lives."""
    cmd = ResolveApproval(
        approval_id=approval_id,
        stream_id=stream_id,
        run_id=run_id,
        thread_id=thread_id,
        decision=decision,
        reason=reason,
        roles=frozenset(roles),
        receipt_id=app.new_id(),
        at=app.clock.now(),
    )
    return await app.resolve_approval(actor, cmd)


async def call_tool(
    app: Application,
    actor: Actor,
    tool: str,
    arguments: dict[str, Any],
    *,
    thread_id: str | None = None,
    roles: Collection[str] = ("member",),
) -> Outcome[DirectCall | None]:
    """A direct tool call (`POST /v1/tools/call`)."""
    cmd = CallTool(
        call_id=app.new_id(),
        work_item_id=app.new_id(),
        tool=tool,
        arguments=arguments,
        thread_id=thread_id,
        roles=frozenset(roles),
    )
    return await app.calls.call(actor, cmd)
