"""Wire types every context's routes share. A context's own request and response bodies
live in its routes module; read-model documents (projections/) are served as stored."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec

Title = Annotated[str, msgspec.Meta(max_length=500)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelValue = Annotated[str, msgspec.Meta(max_length=2048)]
Labels = Annotated[dict[Label, LabelValue], msgspec.Meta(max_length=64)]
Hint = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Bound on log positions and stream seqs in queries: a bigger number names nothing, and would
# not fit the stores' 64-bit integers. 2**53 - 1, the largest integer every JSON reader keeps
# exact (the documented bound goes through a float), is still far past any real log.
MAX_POSITION = 2**53 - 1


def is_position(raw: str) -> bool:
    """Whether a header or query value is a position or seq: ASCII digits, at most
    MAX_POSITION (`str.isdigit` also takes "²", which `int` refuses, and `int` refuses more
    than 4,300 digits)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 16 and int(raw) <= MAX_POSITION


T = TypeVar("T")


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies reject fields they do not know, so typos fail loudly."""


class PageOf(msgspec.Struct, Generic[T], kw_only=True):
    """The shape of every list response (documented; lists are assembled from raw JSON)."""

    data: list[T]
    next_cursor: str | None
    total_count: int
