"""Model providers: `scripted` (offline, deterministic) and `openai` (any Chat Completions
server, streamed, with tool calling)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from nome_api.settings import Settings
from nome_core.runs import scripted
from nome_core.runs.harness import ModelError, Provider
from nome_core.runs.scripted import ToolRequest, outcome_line
from nome_core.runs.state import RunState
from nome_core.tools.registry import ToolRegistry


class ScriptedProvider:
    model = scripted.MODEL
    deterministic = True

    async def turn(self, state: RunState) -> AsyncIterator[str | ToolRequest]:
        for chunk in scripted.turn(state):
            yield chunk


class OpenAIProvider:
    """Streams a Chat Completions turn; the run's log is the conversation so far."""

    deterministic = False

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

    def messages(self, state: RunState) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": state.agent.instructions},
            {"role": "user", "content": state.input},
        ]
        completed = {m.message_id: m.text for m in state.messages if m.completed}
        texts = iter(completed.values())
        if state.calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": next(texts, None),
                    "tool_calls": [
                        {
                            "id": c.call_id,
                            "type": "function",
                            "function": {
                                "name": _wire_name(c.tool),
                                "arguments": json.dumps(c.arguments),
                            },
                        }
                        for c in state.calls
                    ],
                }
            )
            for call in state.calls:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.call_id,
                        "content": outcome_line(call.tool, call.receipt),
                    }
                )
        return messages

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

    async def turn(self, state: RunState) -> AsyncIterator[str | ToolRequest]:
        body: dict[str, Any] = {
            "model": state.agent.model or self.model,
            "messages": self.messages(state),
            "stream": True,
        }
        tools = await self.tools(state)
        if tools:
            body["tools"] = tools
        calls: dict[int, dict[str, str]] = {}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout) as client,
                client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
                ) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise ModelError(f"model server answered {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield delta["content"]
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(tc.get("index", 0), {"name": "", "args": ""})
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["args"] += fn.get("arguments") or ""
        except httpx.HTTPError as exc:
            raise ModelError(f"model server unreachable: {exc.__class__.__name__}") from None
        for index in sorted(calls):
            slot = calls[index]
            try:
                arguments = json.loads(slot["args"]) if slot["args"] else {}
            except json.JSONDecodeError:
                arguments = {"_invalid_json": slot["args"]}
            yield ToolRequest(_tool_name(slot["name"]), arguments)


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
