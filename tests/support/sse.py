"""Reading `text/event-stream` bodies frame by frame, keeping each frame's exact bytes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

KEEPALIVE = b": keepalive"


@dataclass(frozen=True)
class Frame:
    raw: bytes  # the frame as sent, with its terminating blank line
    id: str | None
    event: str | None
    data: dict[str, Any] | None

    @property
    def is_comment(self) -> bool:
        return self.event is None and self.data is None


def parse(raw: bytes) -> Frame:
    fields: dict[str, str] = {}
    for line in raw.rstrip(b"\n").split(b"\n"):
        if line.startswith(b":"):
            continue
        name, _, value = line.decode().partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
    data = json.loads(fields["data"]) if "data" in fields else None
    return Frame(raw=raw, id=fields.get("id"), event=fields.get("event"), data=data)


def frames(chunks: Iterable[bytes]) -> Iterator[Frame]:
    """Frames from a byte stream however it is chunked, comments (keepalives) included."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            yield parse(raw + b"\n\n")


def events_only(body: bytes) -> list[Frame]:
    """The event frames of a whole body, keepalive comments left out."""
    return [f for f in frames([body]) if not f.is_comment]
