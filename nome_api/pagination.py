"""Opaque, stable page cursors and the page envelope, assembled from stored JSON documents."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from nome_api.errors import ApiError

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Sorted-set list cursors hold an index member, "<sort key>|<resource id>".
MEMBER_CURSOR = re.compile(r"[^|]+\|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: re.Pattern[str] | None = None) -> str | None:
    """The position in a cursor; 400 unless it is one this service could have issued."""
    if cursor is None or cursor == "":
        return None
    try:
        # validate=True: the lenient decoder drops stray characters, so `%%%` would decode to
        # "" and quietly restart the walk at the first page.
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        position = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid cursor") from None
    if not position or (shape is not None and not shape.fullmatch(position)):
        raise ApiError(400, "invalid cursor")
    return position


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


async def index_page(
    redis: Any,
    index: str,
    *,
    limit: int,
    cursor: str | None,
    doc_key: Callable[[str], str],
) -> bytes:
    """One page of a lexicographic sorted-set index whose members end in `|<resource id>`:
    the documents after the cursor, in index order, with the index's size as the total."""
    check_limit(limit)
    after = decode_cursor(cursor, MEMBER_CURSOR)
    pipe = redis.pipeline(transaction=False)
    pipe.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
    pipe.zcard(index)
    members, total = await pipe.execute()
    page = members[:limit]
    docs = await redis.mget([doc_key(member_id(m)) for m in page]) if page else []
    next_cursor = encode_cursor(page[-1].decode()) if len(members) > limit and page else None
    return page_json([d for d in docs if d is not None], next_cursor, total)


def member_id(member: bytes) -> str:
    return member.decode().rsplit("|", 1)[1]
