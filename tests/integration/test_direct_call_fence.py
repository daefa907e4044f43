"""Direct tool calls are fenced by the log (issue 10, item 11), as a run's calls are: a call's
`tool.started` is appended before its tool acts, so only one process runs it, and a call
whose process died while its tool ran is settled by another: run again when its tool is
safe to run again, else recorded `unknown`, never silently run twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from nome_api.settings import Settings
from nome_core.application import Actor, Application
from nome_core.approvals.commands import ResolveApproval
from nome_core.calls.commands import CallTool
from nome_core.clock import SystemClock
from nome_core.events import Meta
from nome_core.storage import EventStore, GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.tools.builtin import BUILTIN_TOOLS, ToolSpec
from tests.support.app import BuiltinRegistry
from tests.support.env import PG_URL
from tests.support.fakes import HeldExecutor

ACTOR = Actor(tenant_id_for("acme"), Meta(principal="tester"))
GRACE_S = 0.3  # the grace a started call is left; short here
LIMIT_S = 10.0  # a safety bound on waiting, never asserted


class Registry(BuiltinRegistry):
    """The built-ins, `math.evaluate` declared safe to run again and `clock.now` not."""

    async def get(self, tenant_id: str, name: str) -> ToolSpec | None:
        spec = BUILTIN_TOOLS.get(name)
        if spec is not None and name in ("math.evaluate", "clock.now"):
            return msgspec.structs.replace(spec, idempotent=name == "math.evaluate")
        return spec


class Process:
    """One API or worker process, in effect, over the shared log."""

    def __init__(self, store: EventStore, executor: HeldExecutor) -> None:
        self.writer = GroupCommitWriter(store)
        self.writer.start()
        self.app = Application(
            store, self.writer, SystemClock(), registry=Registry(), executor=executor
        )
        self.app.calls.started_grace_s = GRACE_S


@pytest.fixture
def executor() -> HeldExecutor:
    return HeldExecutor()


@pytest.fixture
def processes(settings: Settings, executor: HeldExecutor) -> Iterator[tuple[Process, Process]]:
    store = EventStore(PG_URL, schema=settings.database_schema)
    a, b = Process(store, executor), Process(store, executor)
    yield a, b
    a.writer.stop()
    b.writer.stop()
    store.close()


def call(tool: str, arguments: dict[str, Any], call_id: str) -> CallTool:
    return CallTool(
        call_id=call_id,
        work_item_id=call_id.replace("0000", "1111", 1),
        tool=tool,
        arguments=arguments,
        thread_id=None,
        roles=frozenset({"admin"}),
    )


async def until(condition: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT_S
    while not condition():
        assert loop.time() < deadline, "what the test waited for never happened"
        await asyncio.sleep(0.002)


async def died_while_running(process: Process, executor: HeldExecutor, cmd: CallTool) -> None:
    """The call started, its tool acting, and then its process gone (its task cancelled,
    so its outcome is never recorded)."""
    task = asyncio.create_task(process.app.calls.call(ACTOR, cmd))
    await until(lambda: executor.running == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def settled(process: Process, call_id: str) -> Any:
    """Settle the call as the worker's sweep does, waiting out the grace; its state once it
    has its receipt (another process may be the one recording it)."""
    wait = await process.app.calls.settle(ACTOR, call_id)
    while wait is not None:
        await asyncio.sleep(wait)
        wait = await process.app.calls.settle(ACTOR, call_id)

    def state() -> Any:
        return process.app.calls.get(ACTOR.tenant_id, call_id)

    await until(lambda: state() is not None and state().call.receipt is not None)
    return state()


async def test_a_call_whose_process_died_is_recorded_unknown_not_run_again(
    processes: tuple[Process, Process], executor: HeldExecutor
) -> None:
    a, b = processes
    await a.app.tenants.create("acme")
    cmd = call("clock.now", {}, "00000000-0000-4000-8000-000000000001")
    await died_while_running(a, executor, cmd)
    # Within its grace the call is its starter's: nothing is settled yet.
    assert await b.app.calls.settle(ACTOR, cmd.call_id) is not None
    state = await settled(b, cmd.call_id)
    assert state.call.receipt is not None and state.call.receipt.status == "unknown"
    assert executor.runs_of(cmd.call_id) == 1


async def test_a_call_of_a_tool_safe_to_run_again_is_run_again_once(
    processes: tuple[Process, Process], executor: HeldExecutor
) -> None:
    a, b = processes
    await a.app.tenants.create("acme")
    cmd = call("math.evaluate", {"expression": "6*7"}, "00000000-0000-4000-8000-000000000002")
    await died_while_running(a, executor, cmd)
    executor.gate.set()
    # Two sweeps at once (one per worker): one of them runs it again.
    first, second = await asyncio.gather(settled(a, cmd.call_id), settled(b, cmd.call_id))
    assert first.call.receipt == second.call.receipt
    assert first.call.receipt.status == "ok"
    assert executor.runs_of(cmd.call_id) == 2
    assert first.attempt.number == 2


async def test_two_processes_finishing_one_approved_call_run_it_once(
    processes: tuple[Process, Process], executor: HeldExecutor
) -> None:
    a, b = processes
    await a.app.tenants.create("acme")
    cmd = call(
        "http.fetch", {"url": "https://example.com/"}, "00000000-0000-4000-8000-000000000003"
    )
    asked = await a.app.calls.call(ACTOR, cmd)
    assert asked.state is not None and asked.state.call.approval_id is not None
    approval_id = asked.state.call.approval_id
    executor.gate.set()
    resolve = ResolveApproval(
        approval_id=approval_id,
        stream_id=cmd.call_id,
        run_id=None,
        thread_id=None,
        decision="approved",
        reason=None,
        roles=frozenset({"admin"}),
        receipt_id="00000000-0000-4000-8000-0000000000aa",
        at=SystemClock().now(),
    )
    await asyncio.gather(
        a.app.calls.resolve(ACTOR, resolve), b.app.calls.finish(ACTOR, cmd.call_id)
    )
    state = await settled(b, cmd.call_id)
    assert state.call.receipt is not None and state.call.receipt.status == "ok"
    assert executor.runs_of(cmd.call_id) == 1
