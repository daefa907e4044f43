"""The run harness: model turn -> text deltas -> tool calls -> final message -> completion.

`next_step` reads only the folded run state, so a worker that takes over a run continues
exactly where the log ends and never redoes a recorded step. The driver talks to the model,
the tools and the log through small ports, so `verify` can drive the same code against the
recorded outputs instead of live ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from nome_core.approvals import decide as approvals_decide
from nome_core.clock import Clock
from nome_core.events import Decided, Draft
from nome_core.runs import decide
from nome_core.runs.events import MessageCompleted, MessageDelta
from nome_core.runs.scripted import ToolRequest
from nome_core.runs.state import Message, RunState
from nome_core.tools.events import PolicyDecision, ToolCalled, ToolCompleted
from nome_core.tools.receipts import ToolReceipt
from nome_core.tools.state import Call


class Start(msgspec.Struct, frozen=True):
    pass


class ModelTurn(msgspec.Struct, frozen=True):
    partial: Message | None


class RunTool(msgspec.Struct, frozen=True):
    call: Call


class RequestApproval(msgspec.Struct, frozen=True):
    call: Call


class Wait(msgspec.Struct, frozen=True):
    """A call waits for its approval; the run resumes when it is resolved."""


class Done(msgspec.Struct, frozen=True):
    pass


Step = Start | ModelTurn | RunTool | RequestApproval | Wait | Done


def next_step(state: RunState) -> Step:
    if state.terminal:
        return Done()
    if state.status == "pending":
        return Start()
    for call in state.calls:
        if call.receipt is not None:
            continue
        if call.policy.decision != "approval_required" or call.approval_status == "approved":
            return RunTool(call)
        if call.approval_id is None:
            return RequestApproval(call)
        return Wait()  # pending; a denial or expiry records the receipt with its resolution
    partial = next((m for m in state.messages if not m.completed), None)
    return ModelTurn(partial)


class ModelError(Exception):
    """The model failed to answer a turn; the run fails with this message."""


class Provider(Protocol):
    """A model: one turn yields text chunks and tool requests."""

    model: str
    # A deterministic provider regenerates the same turn, so a resumed turn skips the text
    # already recorded instead of closing it early.
    deterministic: bool

    def turn(self, state: RunState) -> AsyncIterator[str | ToolRequest]: ...


class Tools(Protocol):
    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision: ...

    async def execute(self, state: RunState, call: Call) -> ToolReceipt: ...


Record = Callable[[RunState, Sequence[Decided]], Awaitable[RunState]]


class Harness:
    """Drives one run from its current state until it ends or waits for an approval."""

    def __init__(
        self,
        provider_for: Callable[[RunState], Provider],
        tools: Tools,
        clock: Clock,
        *,
        flush_chars: int = 2048,
        flush_seconds: float = 0.05,
        approval_ttl_s: float = 3600.0,
    ) -> None:
        self.approval_ttl_s = approval_ttl_s
        self.provider_for = provider_for
        self.tools = tools
        self.clock = clock
        self.flush_chars = flush_chars
        self.flush_seconds = flush_seconds

    async def drive(self, state: RunState, record: Record) -> RunState:
        while True:
            step = next_step(state)
            match step:
                case Done() | Wait():
                    return state
                case Start():
                    # Recorded with the first turn's first step: one commit fewer before the
                    # first token reaches the client.
                    model = self.provider_for(state).model
                    state = await self._turn(state, None, record, carry=decide.start(state, model))
                case RequestApproval(call=call):
                    drafts = approvals_decide.request(
                        call, self.clock.new_id(), self.clock.now(), self.approval_ttl_s
                    )
                    state = await record(state, drafts)
                case RunTool(call=call):
                    receipt = await self.tools.execute(state, call)
                    completed = _tool_completed(call, receipt)
                    state = await record(state, [completed])
                case ModelTurn(partial=partial):
                    state = await self._turn(state, partial, record)

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
        async for chunk in provider.turn(state):
            if isinstance(chunk, ToolRequest):
                requests.append(chunk)
                continue
            # On a resumed deterministic turn, the recorded prefix is regenerated: skip it.
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


def _delta(message_id: str, text: str, work_item: str) -> Draft:
    return Draft(MessageDelta(message_id=message_id, text=text), work_item)


def _tool_completed(call: Call, receipt: ToolReceipt) -> Draft:
    return Draft(ToolCompleted(call_id=call.call_id, receipt=receipt), call.work_item_id)
