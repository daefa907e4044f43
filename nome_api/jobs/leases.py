"""Named leases in Redis: one holder at a time across processes, renewed while held."""

from __future__ import annotations

from typing import Any

# KEYS: lease. ARGV: owner, ttl ms. Take the lease if free, renew it if ours.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, redis: Any, key: str, owner: str, ttl_s: float) -> None:
        self.key = key
        self.owner = owner
        self.ttl_ms = int(ttl_s * 1000)
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease, or renew it if this owner holds it; False if another does."""
        return bool(await self._take(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])
