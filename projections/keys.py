"""API key read models: the lookup by key hash that authenticates requests, and the list."""

from __future__ import annotations

from typing import Any

import msgspec

from nome_core.events import Event
from nome_core.keys.events import KeyCreated, KeyRevoked
from projections.engine import Projection, View
from projections.paging import tenant_page


class Principal(msgspec.Struct, kw_only=True):
    """What a valid key resolves to."""

    key_id: str
    tenant_id: str
    name: str
    roles: list[str]


class KeyView(msgspec.Struct, kw_only=True):
    """A key as the admin list shows it (never the key itself)."""

    id: str
    name: str
    roles: list[str]
    hint: str
    created_at: str


_encode = msgspec.json.Encoder().encode
_decode_key = msgspec.json.Decoder(KeyView).decode
_decode_principal = msgspec.json.Decoder(Principal).decode


class KeysProjection(Projection):
    name = "keys"
    types = frozenset({KeyCreated.type, KeyRevoked.type})

    def by_hash(self, key_sha256: str) -> str:
        return self.key("hash", key_sha256)

    def doc(self, tenant_id: str, key_id: str) -> str:
        return self.key("doc", tenant_id, key_id)

    def hash_of(self, tenant_id: str, key_id: str) -> str:
        return self.key("sha", tenant_id, key_id)

    def index(self, tenant_id: str) -> str:
        return self.key("idx", tenant_id)

    def apply(self, event: Event, view: View) -> None:
        tenant, key_id = event.tenant_id, event.stream_id
        match event.data:
            case KeyCreated() as created:
                principal = Principal(
                    key_id=key_id, tenant_id=tenant, name=created.name, roles=created.roles
                )
                view.set(self.by_hash(created.key_sha256), _encode(principal))
                view.set(self.hash_of(tenant, key_id), created.key_sha256.encode())
                key = KeyView(
                    id=key_id,
                    name=created.name,
                    roles=created.roles,
                    hint=created.hint,
                    created_at=event.at,
                )
                view.set(self.doc(tenant, key_id), _encode(key))
                view.zadd(self.index(tenant), 0, f"{event.at}|{key_id}")
            case KeyRevoked():
                sha = view.get(self.hash_of(tenant, key_id))
                raw = view.get(self.doc(tenant, key_id))
                if sha is not None:
                    view.delete(self.by_hash(sha.decode()), self.hash_of(tenant, key_id))
                if raw is not None:
                    view.zrem(self.index(tenant), f"{_decode_key(raw).created_at}|{key_id}")
                    view.delete(self.doc(tenant, key_id))


class KeyQueries:
    def __init__(self, views: KeysProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def principal(self, key_sha256: str) -> Principal | None:
        """Who a key (by its SHA-256: the secret itself is never compared) belongs to."""
        raw = await self.redis.get(self.views.by_hash(key_sha256))
        return _decode_principal(raw) if raw else None

    async def page(self, tenant_id: str, *, limit: int, cursor: str | None) -> bytes:
        return await tenant_page(self.redis, self.views, tenant_id, limit=limit, cursor=cursor)
