"""The built-in tools' contracts (API.md §5): names, input schemas, and the pure ones' logic."""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

import msgspec


class ClockNowArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class MathEvaluateArgs(msgspec.Struct, forbid_unknown_fields=True):
    expression: str


class ThreadNoteArgs(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class HttpFetchArgs(msgspec.Struct, forbid_unknown_fields=True):
    url: str


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    arguments: type[msgspec.Struct]
    dangerous: bool = False
    source: str = "builtin"  # or "package:<name>"

    def input_schema(self) -> dict[str, Any]:
        """A self-contained object schema: msgspec answers with a `$ref` into `$defs`, which
        function-calling APIs refuse at the top level."""
        schema = msgspec.json.schema(self.arguments)
        return dict(schema["$defs"][self.arguments.__name__])


BUILTIN_TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(name="clock.now", description="The current UTC time.", arguments=ClockNowArgs),
        ToolSpec(
            name="math.evaluate",
            description="Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
            arguments=MathEvaluateArgs,
        ),
        ToolSpec(
            name="thread.note",
            description="Add a system note to the run's thread.",
            arguments=ThreadNoteArgs,
        ),
        ToolSpec(
            name="http.fetch",
            description="GET a public URL; the body is cut at 256 KiB.",
            arguments=HttpFetchArgs,
            dangerous=True,
        ),
    )
}


class ArgumentsInvalid(ValueError):
    """The model's arguments do not fit the tool's schema; the model sees an error receipt."""


def check_arguments(spec: ToolSpec, arguments: Any) -> msgspec.Struct:
    try:
        return msgspec.convert(arguments, spec.arguments)
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
