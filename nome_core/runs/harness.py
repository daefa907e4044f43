"""The run harness: model turn -> text deltas -> tool calls -> final message -> completion.

`next_step` reads only the folded run state, so a worker that takes over a run continues
exactly where the log ends and never redoes a recorded step. The driver talks to the model,
the tools and the log through small ports, so `verify` can drive the same code against the
recorded outputs instead of live ones.

Runs started by harness 2 (`run.started.harness`) also:

- fence every call that reaches its tool: `tool.started` is appended (version-checked) first,
  so of two workers that both think they hold a run only the one whose append won runs it;
  a call found started without an outcome is left alone while the worker that started it
  may still be running it (`started_grace_s`), and then run again if its tool is idempotent
  or recorded `unknown` if not;
- retry a model that fails with an error worth retrying, with capped exponential back-off
  (or the server's `Retry-After`), up to `model_attempts` attempts of one turn; between
  attempts the worker lets go of the run (`Postponed`), and a failed attempt's half-said
  message is discarded by an event that says so. When the attempts are spent, or the error
  is not worth retrying, the run fails.

Every wait is written into the log (`model.retry_scheduled`, `tool.deferred`, the start of
a call), so whichever worker picks the run up next waits for the same moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Final, Protocol

import msgspec

from nome_core.approvals import decide as approvals_decide
from nome_core.clock import Clock, parse_time
from nome_core.events import Decided, DomainEvent, Draft, unrecorded
from nome_core.runs import decide
from nome_core.runs.context import ChatMessage, assemble
from nome_core.runs.events import (
    HARNESS,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    ModelRetryScheduled,
)
from nome_core.runs.scripted import ToolRequest
from nome_core.runs.state import Message, RunState, Started, evolve
from nome_core.tools.events import (
    PolicyDecision,
    ToolCalled,
    ToolCompleted,
    ToolDeferred,
    ToolStarted,
)
from nome_core.tools.executor import STARTED_GRACE_S, ToolQueued, idempotency_key
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call

# Attempts of one model turn before the run fails (the first and three retries).
MODEL_ATTEMPTS: Final = 4
# Back-off between attempts: this doubled per failed attempt, up to the cap, jittered.
MODEL_BACKOFF_S: Final = 1.0
MODEL_BACKOFF_CAP_S: Final = 30.0
# A server's `Retry-After` is honoured up to this.
RETRY_AFTER_CAP_S: Final = 300.0
# A call whose backend is unreachable (`offline: queue`) is tried again after the executor's
# delay, doubled per attempt up to this.
QUEUE_BACKOFF_CAP_S: Final = 60.0


class Start(msgspec.Struct, frozen=True):
    pass


class ModelTurn(msgspec.Struct, frozen=True):
    partial: Message | None


class RunTool(msgspec.Struct, frozen=True):
    call: Call


class Unfinished(msgspec.Struct, frozen=True):
    """The call started and has no outcome: its worker may still be running it, or died."""

    call: Call
    attempt: Started


class RequestApproval(msgspec.Struct, frozen=True):
    call: Call


class Wait(msgspec.Struct, frozen=True):
    """A call waits for its approval; the run resumes when it is resolved."""


class Done(msgspec.Struct, frozen=True):
    pass


Step = Start | ModelTurn | RunTool | Unfinished | RequestApproval | Wait | Done


def next_step(state: RunState) -> Step:
    if state.terminal:
        return Done()
    if state.status == "pending":
        return Start()
    for call in state.calls:
        if call.receipt is not None:
            continue
        if call.policy.decision != "approval_required" or call.approval_status == "approved":
            attempt = state.attempt(call.call_id)
            if attempt is not None and attempt.open:
                return Unfinished(call, attempt)
            return RunTool(call)
        if call.approval_id is None:
            return RequestApproval(call)
        return Wait()  # pending; a denial or expiry records the receipt with its resolution
    partial = next((m for m in state.messages if not m.completed), None)
    return ModelTurn(partial)


class ModelError(Exception):
    """The model failed to answer a turn. `retryable`: asking again may work (the server
    was unreachable, overloaded or failed); `retry_after_s`: when the server asked to be
    asked again. Otherwise the run fails with this message."""

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Postponed(Exception):
    """The run can go no further before `retry_after_s`: the worker lets go of it and
    comes back (a model retry's back-off, a deferred call, a call another worker may still
    be running)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"postponed for {retry_after_s:.1f} s")
        self.retry_after_s = max(0.0, retry_after_s)


class Provider(Protocol):
    """A model: one turn yields text chunks and tool requests."""

    model: str
    # A deterministic provider regenerates the same turn, so a resumed turn skips the text
    # already recorded instead of closing it early.
    deterministic: bool
    # Whether it reads the conversation (the scripted model reads only the run's state).
    conversational: bool

    def turn(
        self, state: RunState, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[str | ToolRequest, None]: ...


class Tools(Protocol):
    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision: ...

    async def execute(self, state: RunState, call: Call) -> ToolReceipt: ...

    async def idempotent(self, state: RunState, call: Call) -> bool:
        """Whether the call may run again, with the same idempotency key, safely."""
        ...

    async def unfinished(self, state: RunState, call: Call, attempt: Started) -> ToolReceipt:
        """The `unknown` receipt of a call whose worker died while running it."""
        ...


class Context(Protocol):
    """What the model is told: the thread's history (runs/context.py)."""

    async def thread_seq(self, state: RunState) -> int | None: ...

    async def conversation(self, state: RunState) -> list[ChatMessage]: ...


Record = Callable[[RunState, Sequence[Decided]], Awaitable[RunState]]


class Harness:
    """Drives one run from its current state until it ends or waits for an approval."""

    def __init__(
        self,
        provider_for: Callable[[RunState], Provider],
        tools: Tools,
        clock: Clock,
        *,
        context: Context | None = None,
        flush_chars: int = 2048,
        flush_seconds: float = 0.05,
        approval_ttl_s: float = 3600.0,
        version: int = HARNESS,
        model_attempts: int = MODEL_ATTEMPTS,
        model_backoff_s: float = MODEL_BACKOFF_S,
        started_grace_s: float = STARTED_GRACE_S,
        wait_for_time: bool = True,
    ) -> None:
        self.approval_ttl_s = approval_ttl_s
        self.provider_for = provider_for
        self.tools = tools
        self.clock = clock
        self.context = context or _NoHistory()
        self.flush_chars = flush_chars
        self.flush_seconds = flush_seconds
        # The harness a pending run is started with (verify starts one as it was started).
        self.version = version
        self.model_attempts = model_attempts
        self.model_backoff_s = model_backoff_s
        self.started_grace_s = started_grace_s
        # Off in verify: waiting was done when the run ran; the replay takes the log's word.
        self.wait_for_time = wait_for_time

    async def drive(self, state: RunState, record: Record) -> RunState:
        while True:
            step = next_step(state)
            match step:
                case Done() | Wait():
                    return state
                case Start():
                    # Recorded with the first turn's first step: one commit fewer before the
                    # first token reaches the client.
                    state = await self._turn(state, None, record, carry=await self._start(state))
                case RequestApproval(call=call):
                    drafts = approvals_decide.request(
                        call, self.clock.new_id(), self.clock.now(), self.approval_ttl_s
                    )
                    state = await record(state, drafts)
                case RunTool(call=call):
                    state = await self._run_tool(state, call, record)
                case Unfinished(call=call, attempt=attempt):
                    state = await self._resolve(state, call, attempt, record)
                case ModelTurn(partial=partial):
                    self._not_before(state.model_not_before)
                    state = await self._turn(state, partial, record)

    async def _start(self, state: RunState) -> list[DomainEvent]:
        model = self.provider_for(state).model
        if self.version < 2:
            return decide.start(state, model)
        thread_seq = await self.context.thread_seq(state)
        return decide.start(state, model, harness=self.version, thread_seq=thread_seq)

    async def _run_tool(self, state: RunState, call: Call, record: Record) -> RunState:
        # A call its policy denied never reaches its tool: there is no effect to fence.
        if state.harness < 2 or call.policy.decision == "deny":
            receipt = await self.tools.execute(state, call)
            return await record(state, [_tool_completed(call, receipt)])
        last = state.attempt(call.call_id)
        if last is not None:
            self._not_before(last.not_before)  # deferred: its backend was down
        idempotent = await self.tools.idempotent(state, call)
        return await self._attempt(state, call, last.attempt + 1 if last else 1, idempotent, record)

    async def _attempt(
        self, state: RunState, call: Call, attempt: int, idempotent: bool, record: Record
    ) -> RunState:
        started = ToolStarted(
            call_id=call.call_id,
            idempotency_key=idempotency_key(call),
            idempotent=idempotent,
            attempt=attempt,
        )
        # The fence: if another worker appended first, this fails and the call is not run.
        state = await record(state, [Draft(started, call.work_item_id)])
        try:
            receipt = await self.tools.execute(state, call)
        except ToolQueued as queued:
            delay = min(QUEUE_BACKOFF_CAP_S, queued.retry_after_s * 2.0 ** (attempt - 1))
            reason = str(queued.__cause__ or queued)
            deferred = ToolDeferred(call_id=call.call_id, reason=reason, retry_after_s=delay)
            await record(state, [Draft(deferred, call.work_item_id)])
            raise Postponed(delay) from None
        return await record(state, [_tool_completed(call, receipt)])

    async def _resolve(
        self, state: RunState, call: Call, attempt: Started, record: Record
    ) -> RunState:
        """A call started without an outcome: wait while its worker may still be running
        it; then run it again if that is safe, else record that its outcome is unknown."""
        if self.wait_for_time:
            age = self._seconds_since(attempt.at)
            if age < self.started_grace_s:
                raise Postponed(self.started_grace_s - age)
        if attempt.idempotent:
            return await self._attempt(state, call, attempt.attempt + 1, True, record)
        receipt = await self.tools.unfinished(state, call, attempt)
        return await record(state, [_tool_completed(call, receipt)])

    def _not_before(self, moment: str | None) -> None:
        if moment is None or not self.wait_for_time:
            return
        left = -self._seconds_since(moment)
        if left > 0:
            raise Postponed(left)

    def _seconds_since(self, moment: str) -> float:
        return (parse_time(self.clock.now()) - parse_time(moment)).total_seconds()

    async def _turn(
        self,
        state: RunState,
        partial: Message | None,
        append: Record,
        *,
        carry: Sequence[Decided] = (),
    ) -> RunState:
        pending_carry = list(carry)

        async def record(seen: RunState, drafts: Sequence[Decided]) -> RunState:
            nonlocal pending_carry
            drafts, pending_carry = [*pending_carry, *drafts], []
            return await append(seen, drafts)

        provider = self.provider_for(state)
        retries = (self.version if state.status == "pending" else state.harness) >= 2
        if partial is not None and not provider.deterministic:
            # The interrupted turn cannot be regenerated: close what was said, start afresh.
            closing = MessageCompleted(
                message_id=partial.message_id,
                role="assistant",
                content=partial.text,
                interrupted=True,
            )
            return await record(state, [Draft(closing, partial.work_item_id)])
        message_id = partial.message_id if partial else self.clock.new_id()
        work_item = (partial.work_item_id if partial else None) or self.clock.new_id()
        skip = len(partial.text) if partial else 0
        text = partial.text if partial else ""
        pending = ""
        # The first text goes out at once (time to first token); the rest is coalesced.
        last_flush = float("-inf")
        requests: list[ToolRequest] = []
        produced = 0
        messages: list[ChatMessage] = []
        if provider.conversational:
            # A first turn is sent with the start it will be recorded with (its thread_seq).
            ahead = state
            for draft in pending_carry:
                ahead = evolve(ahead, unrecorded(draft)) or ahead
            messages = await self.context.conversation(ahead)
        try:
            async with contextlib.aclosing(provider.turn(state, messages)) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, ToolRequest):
                        requests.append(chunk)
                        continue
                    # On a resumed deterministic turn, the recorded prefix is regenerated.
                    if produced + len(chunk) <= skip:
                        produced += len(chunk)
                        continue
                    fresh = chunk[max(0, skip - produced) :]
                    produced += len(chunk)
                    pending += fresh
                    if (
                        len(pending) >= self.flush_chars
                        or time.monotonic() - last_flush >= self.flush_seconds
                    ):
                        state = await record(state, [_delta(message_id, pending, work_item)])
                        text += pending
                        pending = ""
                        last_flush = time.monotonic()
        except ModelError as exc:
            if not retries:
                raise
            return await self._failed(state, exc, message_id, work_item, record)
        if pending:
            state = await record(state, [_delta(message_id, pending, work_item)])
            text += pending
        drafts: list[Decided] = []
        if text:
            drafts.append(
                Draft(
                    MessageCompleted(message_id=message_id, role="assistant", content=text),
                    work_item,
                )
            )
        if requests:
            drafts.extend(await self._calls(state, requests))
        else:
            drafts.extend(decide.complete(state, text))
        return await record(state, drafts)

    async def _failed(
        self, state: RunState, exc: ModelError, message_id: str, work_item: str, record: Record
    ) -> RunState:
        """A failed attempt: what it had said is discarded, and the turn is asked again
        later or the run fails."""
        drafts: list[Decided] = []
        if any(m.message_id == message_id and not m.completed for m in state.messages):
            discarded = MessageDiscarded(message_id=message_id, reason=str(exc))
            drafts.append(Draft(discarded, work_item))
        attempt = state.model_failures + 1
        if exc.retryable and attempt < self.model_attempts:
            if exc.retry_after_s is not None:
                delay = min(RETRY_AFTER_CAP_S, exc.retry_after_s)
            else:
                delay = backoff(state.id, attempt, self.model_backoff_s)
            error = ErrorInfo(code="model_error", message=str(exc))
            drafts.append(ModelRetryScheduled(attempt=attempt, error=error, retry_after_s=delay))
            await record(state, drafts)
            raise Postponed(delay)
        message = f"{exc} (gave up after {attempt} attempts)" if exc.retryable else str(exc)
        drafts.extend(decide.fail(state, "model_error", message))
        return await record(state, drafts)

    async def _calls(self, state: RunState, requests: list[ToolRequest]) -> list[Decided]:
        drafts: list[Decided] = []
        counts: dict[str, int] = {}
        for call in state.calls:
            counts[call.tool] = counts.get(call.tool, 0) + 1
        for request in requests:
            policy = await self.tools.policy_for(state, request.tool, counts.get(request.tool, 0))
            counts[request.tool] = counts.get(request.tool, 0) + 1
            called = ToolCalled(
                call_id=self.clock.new_id(),
                tool=request.tool,
                arguments=request.arguments,
                policy=policy,
            )
            drafts.append(Draft(called, self.clock.new_id()))
        return drafts


def backoff(run_id: str, attempt: int, base_s: float) -> float:
    """Capped exponential back-off with jitter: between half and all of `base_s` doubled per
    failed attempt. The jitter is drawn from the run and the attempt, so runs that failed
    together spread out while each run's delay is one value, whoever computes it."""
    digest = hashlib.sha256(f"{run_id}/{attempt}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return min(MODEL_BACKOFF_CAP_S, base_s * 2.0 ** (attempt - 1)) * (0.5 + fraction / 2)


class _NoHistory:
    """No thread to read (a harness driven without one): the run's own part only."""

    async def thread_seq(self, state: RunState) -> int | None:
        return None

    async def conversation(self, state: RunState) -> list[ChatMessage]:
        return assemble(state, [])


def _delta(message_id: str, text: str, work_item: str) -> Draft:
    return Draft(MessageDelta(message_id=message_id, text=text), work_item)


def _tool_completed(call: Call, receipt: ToolReceipt) -> Draft:
    return Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
