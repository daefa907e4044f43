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
T = TypeVar("T")


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies reject fields they do not know, so typos fail loudly."""


class PageOf(msgspec.Struct, Generic[T], kw_only=True):
    """The shape of every list response (documented; lists are assembled from raw JSON)."""

    data: list[T]
    next_cursor: str | None
    total_count: int
