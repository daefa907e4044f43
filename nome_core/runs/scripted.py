"""The `scripted` model provider (API.md §4): offline and deterministic.

Each `/tool NAME {json}` line of the input is a tool call, in order; then the answer is the
rest of the input echoed word by word, followed by one line per tool call with its outcome.
Pure, so `verify` can run it again and compare with what was recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nome_core.runs.state import RunState
from nome_core.values import SCRIPTED_MODEL

MODEL = SCRIPTED_MODEL


class ToolRequest:
    __slots__ = ("arguments", "tool")

    def __init__(self, tool: str, arguments: Any) -> None:
        self.tool = tool
        self.arguments = arguments

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolRequest) and (self.tool, self.arguments) == (
            other.tool,
            other.arguments,
        )

    def __repr__(self) -> str:
        return f"ToolRequest({self.tool!r}, {self.arguments!r})"


def parse(text: str) -> tuple[list[ToolRequest], str]:
    """Split an input into its tool directives and the rest of the text."""
    requests: list[ToolRequest] = []
    rest: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("/tool "):
            name, _, raw = stripped[len("/tool ") :].strip().partition(" ")
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError:
                arguments = {"_invalid_json": raw}
            requests.append(ToolRequest(name, arguments))
        else:
            rest.append(line)
    return requests, "\n".join(rest)


def turn(state: RunState) -> Iterator[str | ToolRequest]:
    """One model turn: tool requests first (once), then the text answer in word chunks."""
    requests, rest = parse(state.input)
    if requests and not state.calls:
        yield from requests
        return
    words = rest.split()
    lines = [outcome_line(c.tool, c.receipt) for c in state.calls]
    answer_words = [*words]
    for index, word in enumerate(answer_words):
        yield word if index == 0 else " " + word
    for index, line in enumerate(lines):
        yield ("\n" if (answer_words or index) else "") + line


def outcome_line(tool: str, receipt: Any) -> str:
    if receipt is None or receipt.status in ("denied", "skipped"):
        return (
            f"{tool}: denied"
            if receipt is None or receipt.status == "denied"
            else f"{tool}: skipped"
        )
    if receipt.status == "error" or receipt.status == "queued":
        return f"{tool}: error {receipt.error or receipt.status}"
    if receipt.status == "unknown":
        return f"{tool}: unknown"
    return f"{tool}: " + json.dumps(receipt.result, separators=(",", ":"), ensure_ascii=False)
