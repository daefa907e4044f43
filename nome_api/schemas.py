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


Tier = Literal["fast", "standard", "deep"]
Hint = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UserText = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]


class CreateRun(Strict):
    thread_id: str
    input: UserText
    agent_id: str | None = None
    tier: Tier | None = None
    domain_hints: Annotated[list[Hint], msgspec.Meta(max_length=32)] = []
    if_busy: Literal["reject", "enqueue"] = "reject"


class Chat(Strict):
    """A run, on a new thread when `thread_id` is absent."""

    input: UserText
    thread_id: str | None = None
    agent_id: str | None = None
    tier: Tier | None = None
    domain_hints: Annotated[list[Hint], msgspec.Meta(max_length=32)] = []
    if_busy: Literal["reject", "enqueue"] = "reject"


class CancelRun(Strict):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class CreateAgent(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    instructions: Annotated[str, msgspec.Meta(max_length=50_000)]
    provider: Literal["scripted", "openai"] = "scripted"
    model: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    tools: Annotated[list[ToolName], msgspec.Meta(max_length=64)] | None = None
    tier: Tier = "standard"


class UpdateAgent(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    instructions: Annotated[str, msgspec.Meta(max_length=50_000)] | None = None
    provider: Literal["scripted", "openai"] | None = None
    model: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    tools: Annotated[list[ToolName], msgspec.Meta(max_length=64)] | None = None
    tier: Tier | None = None


class PolicyBody(Strict):
    """A tool's policy as an admin sets it (the whole policy; omitted fields take defaults)."""

    max_calls_per_run: Annotated[int, msgspec.Meta(ge=0)] | None = None
    approval: Literal["none", "required", "admin"] = "none"
    offline: Literal["fail", "queue", "skip"] = "fail"
    allowed_roles: Annotated[list[RoleName], msgspec.Meta(max_length=5)] = msgspec.field(
        default_factory=lambda: ["member", "operator", "admin"]
    )


class SimulatePolicy(PolicyBody, kw_only=True):
    tool: ToolName


class CallTool(Strict):
    tool: ToolName
    arguments: dict[str, object] = {}
    thread_id: str | None = None


class Resolve(Strict):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
