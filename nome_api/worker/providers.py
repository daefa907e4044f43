"""Model providers: `scripted` (offline, deterministic) and `openai` (any Chat Completions
server, streamed, with tool calling).

The openai adapter sends the conversation the core built (nome_core/runs/context.py) and
says how a turn failed, so the harness knows whether asking again can help: the server
unreachable or gone mid-stream, 408, 429 and 5xx (with their `Retry-After`) are worth
another attempt; any other status, a body that is not a Chat Completions stream (an HTML
page), or a malformed stream line are not.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from nome_api.settings import Settings
from nome_api.tls import client_context
from nome_core.runs import scripted
from nome_core.runs.context import ChatMessage
from nome_core.runs.harness import ModelError, Provider
from nome_core.runs.scripted import ToolRequest
from nome_core.runs.state import RunState
from nome_core.tools.registry import ToolRegistry

# Statuses a later attempt may get past: a timeout, rate limiting, the server's own failure.
_RETRYABLE = frozenset({408, 429})


class ScriptedProvider:
    model = scripted.MODEL
    deterministic = True
    conversational = False

    async def turn(
        self, state: RunState, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[str | ToolRequest, None]:
        for chunk in scripted.turn(state):
            yield chunk


class OpenAIProvider:
    """Streams a Chat Completions turn of the conversation the harness gives it."""

    deterministic = False
    conversational = True

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        registry: ToolRegistry,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout = timeout

    @staticmethod
    def messages(conversation: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        """The conversation on the Chat Completions wire."""
        wire: list[dict[str, Any]] = []
        for message in conversation:
            item: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": _wire_name(call.tool),
                            "arguments": json.dumps(call.arguments),
                        },
                    }
                    for call in message.tool_calls
                ]
            if message.tool_call_id is not None:
                item["tool_call_id"] = message.tool_call_id
            wire.append(item)
        return wire

    async def tools(self, state: RunState) -> list[dict[str, Any]]:
        specs = [await self.registry.get(state.tenant_id, name) for name in state.agent.tools]
        return [
            {
                "type": "function",
                "function": {
                    "name": _wire_name(spec.name),
                    "description": spec.description,
                    "parameters": spec.input_schema,
                },
            }
            for spec in specs
            if spec is not None
        ]

    async def turn(
        self, state: RunState, messages: Sequence[ChatMessage]
    ) -> AsyncGenerator[str | ToolRequest, None]:
        body: dict[str, Any] = {
            "model": state.agent.model or self.model,
            "messages": self.messages(messages),
            "stream": True,
        }
        tools = await self.tools(state)
        if tools:
            body["tools"] = tools
        calls: dict[int, dict[str, str]] = {}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout, verify=client_context()) as client,
                client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
                ) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise _status_error(response)
                kind = response.headers.get("content-type", "")
                if "text/event-stream" not in kind:
                    # Some servers answer a streamed request with one JSON completion.
                    for item in _completion(await response.aread(), kind):
                        yield item
                    return
                finished = False
                async for line in response.aiter_lines():
                    data = _data_of(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        finished = True
                        break
                    chunk = _chunk(data)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if choice.get("finish_reason"):
                            finished = True
                        if delta.get("content"):
                            yield delta["content"]
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(tc.get("index", 0), {"name": "", "args": ""})
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["args"] += fn.get("arguments") or ""
                if not finished:
                    raise ModelError("the model's stream ended before its answer", retryable=True)
        except httpx.HTTPError as exc:
            raise ModelError(
                f"model server unreachable: {exc.__class__.__name__}", retryable=True
            ) from None
        except (AttributeError, TypeError):
            # A chunk that is JSON but not shaped like one (a list where an object goes).
            raise ModelError("the model's stream is malformed") from None
        for index in sorted(calls):
            yield _request(calls[index]["name"], calls[index]["args"])


def _status_error(response: httpx.Response) -> ModelError:
    status = response.status_code
    detail = ""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        detail = f": {str(message)[:200]}" if message else ""
    except (ValueError, AttributeError):
        pass
    return ModelError(
        f"model server answered {status}{detail}",
        retryable=status in _RETRYABLE or status >= 500,
        retry_after_s=_retry_after(response.headers.get("retry-after")),
    )


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _data_of(line: str) -> str | None:
    """A stream line's data; None for a blank line, a comment or another SSE field."""
    if not line.strip() or line.startswith(":"):
        return None
    if line.startswith("data:"):
        return line[5:].strip()
    if line.split(":", 1)[0] in ("event", "id", "retry"):
        return None
    raise ModelError(f"the model's stream is malformed: {line[:80]!r}")


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise ModelError(f"the model's stream is malformed: {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise ModelError(f"the model's stream is malformed: {data[:80]!r}")
    if "error" in chunk:
        # A server that fails mid-answer says so in the stream; it may do better next time.
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ModelError(f"model server error: {str(message)[:200]}", retryable=True)
    return chunk


def _completion(raw: bytes, kind: str) -> list[str | ToolRequest]:
    """A whole (non-streamed) completion's text and calls; anything else fails the turn."""
    try:
        message = json.loads(raw)["choices"][0]["message"]
        items: list[str | ToolRequest] = [message["content"]] if message.get("content") else []
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            items.append(_request(fn["name"], fn.get("arguments") or ""))
    except (ValueError, LookupError, TypeError, AttributeError):
        raise ModelError(
            f"model server answered 200 with {kind or 'no content type'}, "
            "not a Chat Completions stream"
        ) from None
    return items


def _request(wire_name: str, raw_arguments: str) -> ToolRequest:
    try:
        arguments = json.loads(raw_arguments) if raw_arguments else {}
    except json.JSONDecodeError:
        arguments = {"_invalid_json": raw_arguments}
    return ToolRequest(_tool_name(wire_name), arguments)


# Function names may not contain dots on the OpenAI wire.
def _wire_name(tool: str) -> str:
    return tool.replace(".", "__")


def _tool_name(wire: str) -> str:
    return wire.replace("__", ".")


def provider_for(settings: Settings, registry: ToolRegistry) -> Any:
    """Pick each run's provider from the agent snapshot it was created with."""
    scripted_provider = ScriptedProvider()

    def pick(state: RunState) -> Provider:
        if state.agent.provider == "openai":
            return OpenAIProvider(
                settings.openai_base_url,
                settings.openai_api_key or "",
                state.agent.model or settings.openai_model,
                registry,
            )
        return scripted_provider

    return pick
