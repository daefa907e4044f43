"""The agent loop against the failures of a real deployment, on a real Postgres: two workers
that both think they hold a run (their Redis leases vanished), a worker that dies in the
middle of a tool call, a thread deleted under its runs, and a cancel that lands while a
worker appends.

Each worker here is a process in effect: its own command bus (cache and per-stream locks)
and writer over the shared log, so two of them meet only at the log's version checks, as
two worker processes do. The tools are fakes held at a gate the test opens, so a call is
in progress exactly as long as the test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nome_api.executors.builtin import BuiltinExecutor
from nome_api.settings import Settings
from nome_core.application import Actor
from nome_core.clock import SystemClock
from nome_core.events import Draft, Event, Head, Meta, seal
from nome_core.runs import decide as runs_decide
from nome_core.runs.driver import Advanced
from nome_core.runs.events import ErrorInfo, MessageDelta, ModelRetryScheduled
from nome_core.runs.handlers import step_of
from nome_core.runs.state import RunState
from nome_core.runs.verify import verify
from nome_core.storage.store import EventStore
from nome_core.storage.writer import GroupCommitWriter
from nome_core.tenants.state import tenant_id_for
from nome_core.threads.errors import ThreadNotFound
from nome_core.threads.state import evolve as thread_evolve
from nome_core.tools.builtin import BUILTIN_TOOLS
from nome_core.tools.commands import SetPolicy
from nome_core.tools.events import PolicyDecision, ToolStarted
from nome_core.tools.executor import CallContext, ToolFailed
from nome_core.tools.policy import Policy
from nome_core.tools.state import Call
from tests.support.app import (
    cancel_run,
    create_thread,
    delete_thread,
    make_app,
    resolve_approval,
    scripted_driver,
    start_run,
)
from tests.support.env import PG_URL
from tests.support.fakes import HeldExecutor

ACTOR = Actor(tenant_id_for("acme"), Meta(principal="tester"))
# How long a started call is left to the worker that started it (the harness's grace,
# short here; in production the tool timeout and a margin).
GRACE_S = 0.3
FETCH = '/tool http.fetch {"url": "https://example.com/pay"}\nfetch it'
# A safety bound for waiting on something the test set in motion; never asserted.
LIMIT_S = 10.0


class Worker:
    """One worker process, in effect, over the shared log."""

    def __init__(self, store: EventStore, executor: HeldExecutor, name: str) -> None:
        self.writer = GroupCommitWriter(store)
        self.writer.start()
        self.app = make_app(store, self.writer, SystemClock(), executor)
        self.driver = scripted_driver(self.app, started_grace_s=GRACE_S)
        self.actor = Actor(ACTOR.tenant_id, Meta(principal=name))

    async def advance(self, run_id: str) -> Advanced:
        return await self.driver.advance(self.actor, run_id)

    def run(self, run_id: str) -> RunState:
        state = self.app.runs.get(ACTOR.tenant_id, run_id)
        assert state is not None
        return state


class RivalStore(EventStore):
    """The shared log, where a worker of another process appends a step to a run right
    after someone has read that run (once, when the test arms it)."""

    rival_run: str | None = None

    def load_many(self, streams: Sequence[tuple[str, int]]) -> dict[str, list[Event]]:
        found = super().load_many(streams)
        run_id = self.rival_run
        if run_id is not None and any(stream == run_id for stream, _ in streams):
            self.rival_run = None
            last = self.load(run_id)[-1]
            clock = SystemClock()
            step = Draft(MessageDelta(message_id=clock.new_id(), text="still talking"), None)
            self.insert(
                seal(
                    [step],
                    stream_id=run_id,
                    head=Head(last.seq, last.hash),
                    tenant_id=last.tenant_id,
                    thread_id=last.thread_id,
                    run_id=run_id,
                    meta=Meta(principal="worker-elsewhere"),
                    clock=clock,
                )
            )
        return found


@pytest.fixture
def store(settings: Settings) -> Iterator[RivalStore]:
    store = RivalStore(PG_URL, schema=settings.database_schema)
    yield store
    store.close()


@pytest.fixture
def executor() -> HeldExecutor:
    return HeldExecutor()


@pytest.fixture
def workers(store: RivalStore, executor: HeldExecutor) -> Iterator[tuple[Worker, Worker]]:
    a, b = Worker(store, executor, "worker-a"), Worker(store, executor, "worker-b")
    yield a, b
    a.writer.stop()
    b.writer.stop()


async def until(condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT_S
    while not condition():
        assert loop.time() < deadline, "what the test waited for never happened"
        await asyncio.sleep(0.002)


async def new_run(worker: Worker, text: str, *, thread_id: str | None = None) -> str:
    if worker.app.tenants.named("acme") is None:
        await worker.app.tenants.create("acme")  # with the credits its runs reserve
    if thread_id is None:
        thread = await create_thread(worker.app, ACTOR, "t", {})
        assert thread.state is not None
        thread_id = thread.state.id
    started = await start_run(worker.app, ACTOR, thread_id, text, enqueue=True)
    return started.run.id


async def fetch_without_approval(worker: Worker) -> None:
    policy = Policy(tool="http.fetch", approval="none")
    cmd = SetPolicy(tenant_id=ACTOR.tenant_id, policy=policy, dangerous=True)
    await worker.app.tools.handle(ACTOR, cmd)


def types(store: EventStore, run_id: str) -> list[str]:
    return [e.type for e in store.load(run_id)]


async def die_in_the_middle_of_its_call(worker: Worker, executor: HeldExecutor, run: str) -> None:
    """The worker starts the run's call and dies while the call is in progress."""
    dying = asyncio.create_task(worker.advance(run))
    await until(lambda: executor.running == 1)
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    executor.gate.set()  # whatever runs the call from now on is not held


# -- item 3: never two executions of one call at once -------------------------------------


async def test_two_workers_that_both_think_they_hold_a_run_run_its_tool_call_once(
    workers: tuple[Worker, Worker], executor: HeldExecutor, store: EventStore
) -> None:
    a, b = workers
    run = await new_run(a, "/tool clock.now {}\nwhat time is it")

    first = asyncio.create_task(a.advance(run))
    second = asyncio.create_task(b.advance(run))
    await until(lambda: executor.running >= 1)
    # The other one either ran into the fence and let go, or runs the call too.
    await until(lambda: first.done() or second.done() or executor.running >= 2)
    executor.gate.set()
    advanced = await asyncio.gather(first, second)

    (call,) = a.run(run).calls
    assert executor.most_at_once == 1
    assert executor.runs_of(call.call_id) == 1
    assert types(store, run).count("tool.started") == 1
    assert types(store, run).count("tool.completed") == 1
    assert a.run(run).status == "completed"
    # The worker that lost the race was told to look again once the call can be resolved.
    postponed = [x.retry_after_s for x in advanced if x.retry_after_s is not None]
    assert len(postponed) == 1 and 0 < postponed[0] <= GRACE_S
    verdict = await verify(store.load(run))
    assert verdict.deterministic, verdict


# -- item 11: tools with side effects run once ----------------------------------------------


async def test_a_started_call_of_a_tool_that_may_not_run_twice_is_recorded_unknown_not_rerun(
    workers: tuple[Worker, Worker], executor: HeldExecutor, store: EventStore
) -> None:
    a, b = workers
    await fetch_without_approval(a)
    run = await new_run(a, FETCH)
    await die_in_the_middle_of_its_call(a, executor, run)
    (call,) = a.run(run).calls

    # While the dead worker's call may still be running, the next worker leaves it alone.
    early = await b.advance(run)
    assert early.retry_after_s is not None and 0 < early.retry_after_s <= GRACE_S
    assert executor.runs_of(call.call_id) == 1
    await asyncio.sleep(early.retry_after_s)
    late = await b.advance(run)

    assert late.state is not None and late.state.status == "completed"
    (done,) = late.state.calls
    assert done.receipt is not None and done.receipt.status == "unknown"
    assert done.receipt.result is None and "may or may not" in (done.receipt.error or "")
    assert executor.runs_of(call.call_id) == 1
    assert types(store, run).count("tool.started") == 1
    assert late.state.output is not None and "http.fetch: unknown" in late.state.output
    verdict = await verify(store.load(run))
    assert verdict.deterministic, verdict


async def test_a_started_call_of_an_idempotent_tool_is_run_again_with_the_same_key(
    workers: tuple[Worker, Worker], executor: HeldExecutor, store: EventStore
) -> None:
    a, b = workers
    run = await new_run(a, "/tool clock.now {}\nwhat time is it")
    await die_in_the_middle_of_its_call(a, executor, run)
    (call,) = a.run(run).calls

    early = await b.advance(run)
    assert early.retry_after_s is not None and executor.runs_of(call.call_id) == 1
    await asyncio.sleep(early.retry_after_s)
    late = await b.advance(run)

    assert late.state is not None and late.state.status == "completed"
    (done,) = late.state.calls
    assert done.receipt is not None and done.receipt.status == "ok"
    assert executor.runs_of(call.call_id) == 2
    starts = [e.data for e in store.load(run) if isinstance(e.data, ToolStarted)]
    assert [(s.attempt, s.idempotency_key, s.idempotent) for s in starts] == [
        (1, call.call_id, True),
        (2, call.call_id, True),
    ]
    verdict = await verify(store.load(run))
    assert verdict.deterministic, verdict


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


async def test_http_fetch_sends_its_calls_id_as_the_idempotency_key() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        executor = BuiltinExecutor(SystemClock(), fetch_allow_hosts=frozenset({"127.0.0.1"}))
        url = f"http://127.0.0.1:{server.server_address[1]}/pay"
        call = Call(
            call_id="0d3c4a52-3f43-4b8e-9a43-7f8f6c0e4b1a",
            work_item_id=None,
            tool="http.fetch",
            arguments={"url": url},
            policy=PolicyDecision(decision="allow", rule="policy"),
        )
        context = CallContext(tenant_id=ACTOR.tenant_id, run_id=None, thread_id=None)
        result = await executor.run(BUILTIN_TOOLS["http.fetch"], call, context)
    finally:
        server.shutdown()
        server.server_close()
    assert result == {"status": 200, "body": "ok"}
    assert _Recorder.seen[-1]["Idempotency-Key"] == call.call_id


@pytest.mark.parametrize("url", ["http://[::1/pay", "http://example.com:99999/", "ftp://x/"])
async def test_http_fetch_of_a_url_it_cannot_use_is_a_failed_call_not_a_crash(url: str) -> None:
    executor = BuiltinExecutor(SystemClock())
    call = Call(
        call_id="0d3c4a52-3f43-4b8e-9a43-7f8f6c0e4b1b",
        work_item_id=None,
        tool="http.fetch",
        arguments={"url": url},
        policy=PolicyDecision(decision="allow", rule="policy"),
    )
    context = CallContext(tenant_id=ACTOR.tenant_id, run_id=None, thread_id=None)
    with pytest.raises(ToolFailed):
        await executor.run(BUILTIN_TOOLS["http.fetch"], call, context)


# -- item 9: a run whose thread is deleted stops ------------------------------------------


async def test_deleting_a_thread_cancels_its_runs_and_withdraws_their_pending_approvals(
    workers: tuple[Worker, Worker], executor: HeldExecutor, store: EventStore
) -> None:
    a, _ = workers
    run = await new_run(a, FETCH)
    waiting = await a.advance(run)
    assert waiting.state is not None and waiting.state.awaiting_approval
    thread_id = waiting.state.thread_id
    queued = await new_run(a, "after that", thread_id=thread_id)

    await delete_thread(a.app, ACTOR, thread_id)

    for run_id in (run, queued):
        state = a.run(run_id)
        assert state.status == "cancelled" and state.cancelled_by == "tester"
        assert not state.awaiting_approval
    (call,) = a.run(run).calls
    assert call.approval_status == "denied" and call.receipt is None
    thread = a.app.bus.load(thread_id, thread_evolve)
    assert thread is not None and thread.deleted
    assert thread.active_run_id is None and thread.queued_run_ids == ()
    # The queued run was released, never admitted.
    assert [e.type for e in store.load(thread_id)][-3:] == [
        "thread.run_released",
        "thread.run_released",
        "thread.deleted",
    ]
    with pytest.raises(ThreadNotFound):
        await delete_thread(a.app, ACTOR, thread_id)


async def test_an_approved_call_of_a_run_whose_thread_was_deleted_never_runs(
    workers: tuple[Worker, Worker], executor: HeldExecutor, store: EventStore
) -> None:
    a, b = workers
    executor.gate.set()
    run = await new_run(a, FETCH)
    waiting = await a.advance(run)
    assert waiting.state is not None
    (call,) = waiting.state.calls
    assert call.approval_id is not None
    await resolve_approval(
        a.app,
        ACTOR,
        approval_id=call.approval_id,
        stream_id=run,
        run_id=run,
        thread_id=waiting.state.thread_id,
        decision="approved",
    )
    await delete_thread(a.app, ACTOR, waiting.state.thread_id)

    # Either worker, with whatever it had read of the run before the deletion.
    for worker in (a, b):
        advanced = await worker.advance(run)
        assert advanced.state is not None and advanced.state.status == "cancelled"
    assert executor.runs_of(call.call_id) == 0
    assert "tool.started" not in types(store, run)


# -- item 5: a cancel always wins ---------------------------------------------------------


async def test_a_cancel_wins_over_a_worker_that_appends_a_step_while_it_is_decided(
    workers: tuple[Worker, Worker], store: RivalStore
) -> None:
    a, _ = workers
    run = await new_run(a, "a long answer")
    state = a.run(run)
    await a.app.runs.record(ACTOR, step_of(state, runs_decide.start(state, "scripted-1")))

    store.rival_run = run  # another process's worker appends right after the cancel reads
    outcome = await cancel_run(a.app, ACTOR, run, by="operator")

    assert store.rival_run is None, "the rival never appended"
    assert outcome.state is not None and outcome.state.status == "cancelled"
    assert types(store, run)[-2:] == ["message.delta", "run.cancelled"]
    assert (await a.advance(run)).state == outcome.state


async def test_a_model_retry_one_worker_scheduled_is_waited_for_by_any_other(
    workers: tuple[Worker, Worker], store: EventStore
) -> None:
    a, b = workers
    run = await new_run(a, "hello")
    state = a.run(run)
    started = runs_decide.start(state, "scripted-1", harness=2, thread_seq=0)
    error = ErrorInfo(code="model_error", message="model server answered 503")
    retry = ModelRetryScheduled(attempt=2, error=error, retry_after_s=30.0)
    await a.app.runs.record(ACTOR, step_of(state, [*started, retry]))
    head = len(store.load(run))

    advanced = await b.advance(run)

    assert advanced.retry_after_s is not None and 25 < advanced.retry_after_s <= 30
    assert len(store.load(run)) == head  # the model was not asked
    assert b.run(run).model_failures == 2  # the next failure is the third, whoever sees it
