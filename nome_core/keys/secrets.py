"""API key material: generation and hashing. Raw keys exist only in the creating response."""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "nome_sk_"
_SHAPE = re.compile(r"^nome_sk_[A-Za-z0-9_-]{43}$")


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)  # 32 bytes -> 43 url-safe characters


def is_well_formed(key: str) -> bool:
    return bool(_SHAPE.match(key))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hint(key: str) -> str:
    return key[: len(PREFIX) + 4]
