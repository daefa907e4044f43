"""Tool execution: validate, apply the policy outcome, run, and write the receipt."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from nome_core.clock import Clock
from nome_core.eventstore import sha256_hex
from nome_core.runs.events import PolicyDecision
from nome_core.runs.state import Call, RunState
from nome_core.tools import policy as policies
from nome_core.tools.builtin import (
    BUILTIN_TOOLS,
    ArgumentsInvalid,
    HttpFetchArgs,
    MathError,
    MathEvaluateArgs,
    ThreadNoteArgs,
    check_arguments,
    evaluate,
)
from nome_core.tools.calls import DirectCall
from nome_core.tools.receipts import ReceiptStatus, ToolReceipt
from nome_core.tools.registry import ToolRegistry

MAX_BODY = 256 * 1024
_NOTE_NAMESPACE = uuid.UUID("5b1f3c1e-4f0e-4d5e-9c55-6e6f6d650003")


class ToolFailed(Exception):
    """The tool ran and failed; the model sees the message in an `error` receipt."""


class BackendUnreachable(ToolFailed):
    """The tool's backend cannot be reached; the policy's `offline` rule decides."""


class ToolQueued(Exception):
    """`offline: queue`: the call waits and is retried once the backend may be back."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"tool backend unreachable; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class ToolRunner:
    """Runs built-in tools for the harness and for direct calls, under the policy matrix."""

    def __init__(
        self,
        clock: Clock,
        policy_of: Callable[[str, str], policies.Policy],
        registry: ToolRegistry,
        *,
        fetch_allow_hosts: frozenset[str] = frozenset(),
        queue_retry_s: float = 2.0,
    ) -> None:
        self.clock = clock
        self.policy_of = policy_of
        self.registry = registry
        self.fetch_allow_hosts = fetch_allow_hosts
        self.queue_retry_s = queue_retry_s

    async def current_policy(self, tenant_id: str, tool: str) -> policies.Policy:
        return await asyncio.to_thread(self.policy_of, tenant_id, tool)

    async def policy_for(self, state: RunState, tool: str, calls_so_far: int) -> PolicyDecision:
        if self.registry.get(state.tenant_id, tool) is None:
            return PolicyDecision(decision="deny", rule="unknown_tool")
        if tool not in state.agent.tools:
            # The agent's tool list is what its runs may use, whatever the model asks for.
            return PolicyDecision(decision="deny", rule="agent_tools")
        policy = await self.current_policy(state.tenant_id, tool)
        return policies.decide(policy, calls_so_far=calls_so_far, creator_roles=state.creator_roles)

    async def execute(self, state: RunState | DirectCall, call: Call) -> ToolReceipt:
        """Run one call and write its receipt. Raises ToolQueued for `offline: queue`."""
        started, t0 = self.clock.now(), time.perf_counter()
        status: ReceiptStatus = "ok"
        result: Any = None
        error: str | None = None
        if call.policy.decision == "deny":
            status, error = "denied", f"denied by policy ({call.policy.rule})"
        else:
            try:
                result = await self._run(call)
            except BackendUnreachable as exc:
                offline = (await self.current_policy(state.tenant_id, call.tool)).offline
                if offline == "queue":
                    raise ToolQueued(self.queue_retry_s) from exc
                status = "skipped" if offline == "skip" else "error"
                error = str(exc)
            except (ArgumentsInvalid, ToolFailed, MathError) as exc:
                status, error = "error", str(exc)
        return ToolReceipt(
            id=self.clock.new_id(),
            run_id=state.id if isinstance(state, RunState) else None,
            work_item_id=call.work_item_id,
            call_id=call.call_id,
            tool=call.tool,
            status=status,
            arguments_sha256=sha256_hex(call.arguments),
            result=result,
            result_sha256=sha256_hex(result) if result is not None else None,
            error=error,
            started_at=started,
            finished_at=self.clock.now(),
            duration_ms=round((time.perf_counter() - t0) * 1000, 3),
            policy_version=call.policy.version,
            approval_id=call.approval_id,
        )

    async def _run(self, call: Call) -> Any:
        """The built-in tools run here, in the worker (the registry lists no others yet)."""
        spec = BUILTIN_TOOLS.get(call.tool)
        if spec is None:
            raise ToolFailed(f"{call.tool} cannot run in this process")
        args = check_arguments(spec, call.arguments)
        match args:
            case MathEvaluateArgs(expression=expression):
                return {"value": evaluate(expression)}
            case ThreadNoteArgs():
                # The note itself is appended to the thread with this receipt (runs/effects.py).
                return {"note_id": str(uuid.uuid5(_NOTE_NAMESPACE, call.call_id))}
            case HttpFetchArgs(url=url):
                return await self._fetch(url)
        return {"now": self.clock.now()}

    async def _fetch(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolFailed("only http and https URLs can be fetched")
        host = parts.hostname
        if host not in self.fetch_allow_hosts:
            await _refuse_private(host, parts.port or (443 if parts.scheme == "https" else 80))
        try:
            async with (
                httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY:
                        body = body[:MAX_BODY]
                        break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BackendUnreachable(f"{host} is unreachable ({exc.__class__.__name__})") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"fetch failed: {exc.__class__.__name__}") from None
        return {"status": response.status_code, "body": body.decode("utf-8", "replace")}


async def _refuse_private(host: str, port: int) -> None:
    """Refuse loopback, private and link-local targets (checked on every resolved address)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ToolFailed(f"cannot resolve {host}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise ToolFailed(f"{host} resolves to a non-public address")
