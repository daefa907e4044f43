"""Wire schemas of request bodies. Responses reuse the read-model documents of projections/."""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

import msgspec

Title = Annotated[str, msgspec.Meta(max_length=500)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelValue = Annotated[str, msgspec.Meta(max_length=2048)]
Labels = Annotated[dict[Label, LabelValue], msgspec.Meta(max_length=64)]
T = TypeVar("T")
RoleName = Literal["viewer", "member", "operator", "auditor", "admin"]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies reject fields they do not know, so typos fail loudly."""


class CreateThread(Strict):
    title: Title = ""
    metadata: Labels = {}


class RenameThread(Strict):
    title: Title


class PostMessage(Strict):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    # Assistant and tool messages come only from runs.
    role: Literal["user", "system"] = "user"
    metadata: Labels = {}


class CreateKey(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    roles: Annotated[list[RoleName], msgspec.Meta(min_length=1, max_length=5)]
    tenant_id: str | None = None


class CreatedKey(msgspec.Struct, kw_only=True):
    """The one response that carries a raw key."""

    id: str
    name: str
    roles: list[str]
    key: str
    created_at: str


class PageOf(msgspec.Struct, Generic[T], kw_only=True):
    """The shape of every list response (documented; lists are assembled from raw JSON)."""

    data: list[T]
    next_cursor: str | None
    total_count: int
