"""The built-in tools' contracts (API.md §5): names, input schemas, and the pure ones' logic."""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

import msgspec

from nome_core.errors import Invalid


class ClockNowArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class MathEvaluateArgs(msgspec.Struct, forbid_unknown_fields=True):
    expression: str


class ThreadNoteArgs(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class HttpFetchArgs(msgspec.Struct, forbid_unknown_fields=True):
    url: str


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller and a model know of a tool: its contract, not how it runs."""

    name: str
    description: str
    input_schema: dict[str, Any]
    dangerous: bool = False
    # "builtin", or "package:<name>@<version>" for a package's tool.
    source: str = "builtin"
    # Safe to run again with the same idempotency key: a call whose worker died before
    # recording its outcome is run again rather than recorded as `unknown`.
    idempotent: bool = False


def _object_schema(arguments: type[msgspec.Struct]) -> dict[str, Any]:
    """A self-contained object schema: msgspec answers with a `$ref` into `$defs`, which
    function-calling APIs refuse at the top level."""
    schema = msgspec.json.schema(arguments)
    return dict(schema["$defs"][arguments.__name__])


BUILTIN_ARGUMENTS: dict[str, type[msgspec.Struct]] = {
    "clock.now": ClockNowArgs,
    "math.evaluate": MathEvaluateArgs,
    "thread.note": ThreadNoteArgs,
    "http.fetch": HttpFetchArgs,
}


def _builtin(
    name: str, description: str, *, dangerous: bool = False, idempotent: bool = True
) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=description,
        input_schema=_object_schema(BUILTIN_ARGUMENTS[name]),
        dangerous=dangerous,
        idempotent=idempotent,
    )


BUILTIN_TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        _builtin("clock.now", "The current UTC time."),
        _builtin(
            "math.evaluate",
            "Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
        ),
        # Its note id derives from the call id and lands with the receipt: once, however
        # often it runs.
        _builtin("thread.note", "Add a system note to the run's thread."),
        # What a URL does when fetched twice is not known.
        _builtin(
            "http.fetch",
            "GET a public URL; the body is cut at 256 KiB.",
            dangerous=True,
            idempotent=False,
        ),
    )
}


class ArgumentsInvalid(Invalid):
    """The arguments do not fit the tool's schema: a direct caller gets a 422, a model an
    `error` receipt."""


def check_arguments(name: str, arguments: Any) -> msgspec.Struct:
    """A built-in tool's arguments as its typed Struct."""
    try:
        return msgspec.convert(arguments, BUILTIN_ARGUMENTS[name])
    except msgspec.ValidationError as exc:
        raise ArgumentsInvalid(str(exc)) from None


# -- math.evaluate: arithmetic over an AST whitelist, never eval ---------------------------

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = (ast.UAdd, ast.USub)
_MAX_EXPRESSION = 1000
_MAX_MAGNITUDE = 10**100


class MathError(ValueError):
    """An expression math.evaluate refuses or cannot compute."""

    pass


def evaluate(expression: str) -> int | float:
    if len(expression) > _MAX_EXPRESSION:
        raise MathError("expression too long")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise MathError("not an arithmetic expression") from None
    value = _eval(tree.body)
    if isinstance(value, float) and not math.isfinite(value):
        raise MathError("result is not finite")
    return value


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise MathError("booleans are not numbers here")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 10**6):
            raise MathError("exponent too large")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise MathError("division by zero") from None
        if isinstance(result, complex) or abs(result) > _MAX_MAGNITUDE:
            raise MathError("result out of range")
        return result  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY):
        operand = _eval(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    raise MathError("only numbers, + - * / // % ** and parentheses are allowed")
