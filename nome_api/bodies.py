"""Request bodies are decoded in one place: a JSON body that cannot be read is the client's
error (400), whatever in it msgspec stumbles on.

msgspec raises DecodeError for malformed JSON, which Litestar answers as a 400, but two
things it raises otherwise: RecursionError for a body nested past the interpreter's
recursion limit, and UnicodeDecodeError for invalid UTF-8 inside a JSON string. Nesting is
also bounded below that limit: a body that decodes here is stored in an event, hashed into
its chain and projected, and each of those walks it recursively.
"""

from __future__ import annotations

from typing import Any

from litestar import Request as LitestarRequest

from nome_api.errors import ApiError

# Deeper than any tool's arguments need; far enough below the recursion limit (1,000) for the
# code that walks a stored body after the request's own stack.
MAX_DEPTH = 128


class Request(LitestarRequest[Any, Any, Any]):
    """The app's request class: its JSON body is decoded safely, once."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:
            raise ApiError(400, f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
        except UnicodeDecodeError:
            raise ApiError(400, "the JSON body is not valid UTF-8") from None
        body = await self.body()
        # Nesting needs brackets: most bodies have too few to be deep, counted at C speed.
        if body.count(b"[") + body.count(b"{") > MAX_DEPTH and depth(value) > MAX_DEPTH:
            raise ApiError(400, f"the JSON body nests deeper than {MAX_DEPTH} levels")
        return value


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (a scalar is 0), walked
    without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest
