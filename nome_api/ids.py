"""Resource ids on the wire: anything that is not a UUID names nothing (404)."""

from __future__ import annotations

import re

from nome_api.errors import ApiError

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


def checked_id(value: str, what: str) -> str:
    if not _UUID.match(value):
        raise ApiError(404, f"no such {what}")
    return value
