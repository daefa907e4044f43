"""Pages of read models: opaque, stable cursors and the page envelope, assembled from the
stored JSON documents without decoding them.

Lists are sorted sets whose members end in `|<resource id>`; a cursor holds the last member
(or score) seen, so items inserted while a client pages never shift the pages after it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Sorted-set list cursors hold an index member, "<sort key>|<resource id>".
MEMBER_CURSOR = re.compile(r"[^|]+\|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Lists ordered by a number (a message's or receipt's seq) hold the last one seen.
SCORE_CURSOR = re.compile(r"\d{1,18}")


class InvalidCursor(ValueError):
    """A cursor this service could not have issued."""

    def __init__(self) -> None:
        super().__init__("invalid cursor")


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: re.Pattern[str]) -> str | None:
    """The position in a cursor; InvalidCursor unless it is one this service could issue."""
    if cursor is None or cursor == "":
        return None
    try:
        # validate=True: the lenient decoder drops stray characters, so `%%%` would decode to
        # "" and quietly restart the walk at the first page.
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        position = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor() from None
    if not position or not shape.fullmatch(position):
        raise InvalidCursor()
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


def member_id(member: bytes) -> str:
    return member.decode().rsplit("|", 1)[1]


def split_member(member: bytes) -> tuple[str, str]:
    """A `<tenant>|<id>` member of a set shared by every tenant."""
    tenant_id, _, item_id = member.decode().partition("|")
    return tenant_id, item_id


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
    after = decode_cursor(cursor, MEMBER_CURSOR)
    pipe = redis.pipeline(transaction=False)
    pipe.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
    pipe.zcard(index)
    members, total = await pipe.execute()
    page = members[:limit]
    docs = await redis.mget([doc_key(member_id(m)) for m in page]) if page else []
    next_cursor = encode_cursor(page[-1].decode()) if len(members) > limit and page else None
    return page_json([d for d in docs if d is not None], next_cursor, total)


class TenantIndexed(Protocol):
    """A read model whose tenant's documents are listed by one lexicographic index."""

    def doc(self, tenant_id: str, item_id: str) -> str: ...

    def index(self, tenant_id: str) -> str: ...


async def tenant_page(
    redis: Any, views: TenantIndexed, tenant_id: str, *, limit: int, cursor: str | None
) -> bytes:
    """One page of a tenant's documents, in its index's order."""
    return await index_page(
        redis,
        views.index(tenant_id),
        limit=limit,
        cursor=cursor,
        doc_key=lambda item_id: views.doc(tenant_id, item_id),
    )


async def score_page(
    redis: Any,
    order: str,
    *,
    limit: int,
    cursor: str | None,
    docs: Callable[[list[bytes]], Any],
) -> bytes:
    """One page of a sorted set scored by a number (oldest first): the documents `docs`
    fetches for the members after the cursor's score."""
    after = decode_cursor(cursor, SCORE_CURSOR)
    pipe = redis.pipeline(transaction=False)
    pipe.zrangebyscore(
        order, f"({after}" if after else "-inf", "+inf", start=0, num=limit + 1, withscores=True
    )
    pipe.zcard(order)
    members, total = await pipe.execute()
    page = members[:limit]
    found = await docs([m for m, _ in page]) if page else []
    next_cursor = encode_cursor(str(int(page[-1][1]))) if len(members) > limit and page else None
    return page_json([d for d in found if d is not None], next_cursor, total)
