"""Opaque, stable page cursors and the page envelope, assembled from stored JSON documents."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import msgspec

from nome_api.errors import ApiError

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None or cursor == "":
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid cursor") from None


def page_json(docs: Sequence[bytes], next_cursor: str | None, total: int) -> bytes:
    """`{"data": [...], "next_cursor": ..., "total_count": N}` without re-encoding the docs."""
    return b"".join(
        (
            b'{"data":[',
            b",".join(docs),
            b'],"next_cursor":',
            msgspec.json.encode(next_cursor),
            b',"total_count":',
            str(total).encode(),
            b"}",
        )
    )
