"""Account read models: each tenant's account as the domain folds it (credits by grant,
reservations), its ledger (newest first), its usage by day with tiers and agents, and the
grants due to expire; and their queries. Usage is kept per day, so a report over any range
reads one hash a day, whatever the number of runs."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec

from nome_core.accounts.events import (
    CreditsConsumed,
    CreditsExpired,
    CreditsGranted,
    CreditsReleased,
    CreditsReserved,
)
from nome_core.accounts.state import AccountState, evolve
from nome_core.clock import parse_time
from nome_core.events import Event
from nome_core.runs.events import RunCancelled, RunCompleted, RunCreated, RunFailed, Usage
from projections.engine import Projection, View
from projections.paging import MEMBER_CURSOR, decode_cursor, encode_cursor, page_json, split_member

# How each ledger event shows in GET /v1/account/ledger.
ENTRY_TYPES = {
    CreditsGranted.type: "grant",
    CreditsReserved.type: "reserve",
    CreditsConsumed.type: "consume",
    CreditsReleased.type: "release",
    CreditsExpired.type: "expire",
}


class LedgerEntry(msgspec.Struct, kw_only=True):
    id: str
    type: str
    amount: int
    run_id: str | None
    grant_id: str | None
    at: str
    reason: str | None


class Credits(msgspec.Struct, kw_only=True):
    balance: int
    available: int
    reserved: int
    granted: int
    consumed: int
    expired: int


class UsageFigures(msgspec.Struct, kw_only=True):
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0


class _RunFacts(msgspec.Struct, kw_only=True):
    """What a run's usage is counted under: kept from its creation until it is settled."""

    tier: str
    agent_id: str
    # The day it ended (set at its end).
    day: str = ""

    @property
    def groups(self) -> list[str]:
        known = [f"tier:{self.tier}", f"agent:{self.agent_id}"] if self.tier else []
        return ["total", *known]


_encode = msgspec.json.Encoder().encode
_decode_facts = msgspec.json.Decoder(_RunFacts).decode
_decode_account = msgspec.json.Decoder(AccountState).decode
_NEWEST_FIRST = str.maketrans("0123456789", "9876543210")


class AccountsProjection(Projection):
    name = "accounts"
    types = frozenset(
        {*ENTRY_TYPES, RunCreated.type, RunCompleted.type, RunFailed.type, RunCancelled.type}
    )

    def account(self, tenant_id: str) -> str:
        return self.key("account", tenant_id)

    def ledger(self, tenant_id: str) -> str:
        return self.key("ledger", tenant_id)

    def entries(self, tenant_id: str) -> str:
        return self.key("entries", tenant_id)

    def usage(self, tenant_id: str, day: str) -> str:
        return self.key("usage", tenant_id, day)

    def days(self, tenant_id: str) -> str:
        return self.key("days", tenant_id)

    def expiring(self) -> str:
        """`tenant|grant` of grants with an expiry, scored by it (epoch seconds)."""
        return self.key("expiring")

    def _run(self, run_id: str) -> str:
        return self.key("run", run_id)

    def apply(self, event: Event, view: View) -> None:
        tenant = event.tenant_id
        data = event.data
        if event.type in ENTRY_TYPES:
            self._entry(event, view)
            raw = view.get(self.account(tenant))
            account = evolve(_decode_account(raw) if raw else None, event)
            assert account is not None
            view.set(self.account(tenant), _encode(account))
            # What the expiry job must look at: grants with an expiry and something left.
            for grant in account.grants:
                if grant.expires_at is None:
                    continue
                member = f"{tenant}|{grant.grant_id}"
                if grant.remaining > 0:
                    view.zadd(self.expiring(), parse_time(grant.expires_at).timestamp(), member)
                else:
                    view.zrem(self.expiring(), member)
            if isinstance(data, CreditsConsumed | CreditsReleased):
                self._charged(view, tenant, data.run_id, event.at, data)
            return
        match data:
            case RunCreated(tier=tier, agent_id=agent_id):
                facts = _RunFacts(tier=tier, agent_id=agent_id)
                view.set(self._run(event.stream_id), _encode(facts))
            case RunCompleted() | RunFailed() | RunCancelled():
                raw = view.get(self._run(event.stream_id))
                if raw is None:
                    return
                facts = msgspec.structs.replace(_decode_facts(raw), day=event.at[:10])
                usage: Usage = data.usage or Usage()
                key = self.usage(tenant, facts.day)
                view.zadd(self.days(tenant), 0, facts.day)
                for group in facts.groups:
                    view.hincrby(key, f"{group}:runs", 1)
                    view.hincrby(key, f"{group}:input_tokens", usage.input_tokens)
                    view.hincrby(key, f"{group}:output_tokens", usage.output_tokens)
                # Kept for the ledger's settlement of the run, in the same commit.
                view.set(self._run(event.stream_id), _encode(facts))

    def _charged(
        self, view: View, tenant: str, run_id: str, at: str, data: CreditsConsumed | CreditsReleased
    ) -> None:
        """A run's settlement: what it consumed counts on the day it ended, for its tier and
        agent. Its facts are dropped once settled (a settlement consumes, releases or both,
        consumption first)."""
        raw = view.get(self._run(run_id))
        facts = _decode_facts(raw) if raw else _RunFacts(tier="", agent_id="")
        day = facts.day or at[:10]
        if isinstance(data, CreditsConsumed):
            view.zadd(self.days(tenant), 0, day)
            for group in facts.groups:
                view.hincrby(self.usage(tenant, day), f"{group}:credits", data.amount)
        if raw is not None and facts.day:
            view.delete(self._run(run_id))

    def _entry(self, event: Event, view: View) -> None:
        data: Any = event.data
        entry = LedgerEntry(
            id=event.id,
            type=ENTRY_TYPES[event.type],
            amount=data.amount,
            run_id=getattr(data, "run_id", None),
            grant_id=getattr(data, "grant_id", None),
            at=event.at,
            reason=getattr(data, "reason", None) or None,
        )
        member = f"{event.at.translate(_NEWEST_FIRST)}|{event.id}"
        view.zadd(self.ledger(event.tenant_id), 0, member)
        view.hset(self.entries(event.tenant_id), event.id, _encode(entry))


class DayUsage(UsageFigures, kw_only=True):
    date: str


class AgentUsage(UsageFigures, kw_only=True):
    agent_id: str


class UsageReport(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Usage over a range of days; each grouping is left out when another one is asked for."""

    credits: Credits
    by_tier: dict[str, UsageFigures] | msgspec.UnsetType = msgspec.UNSET
    by_day: list[DayUsage] | msgspec.UnsetType = msgspec.UNSET
    by_agent: list[AgentUsage] | msgspec.UnsetType = msgspec.UNSET


class AccountQueries:
    def __init__(self, views: AccountsProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def credits(self, tenant_id: str) -> Credits:
        raw = await self.redis.get(self.views.account(tenant_id))
        account = _decode_account(raw) if raw else AccountState(tenant_id=tenant_id)
        return Credits(
            balance=account.balance,
            available=account.available,
            reserved=account.reserved,
            granted=account.granted,
            consumed=account.consumed,
            expired=account.expired,
        )

    async def ledger(self, tenant_id: str, *, limit: int, cursor: str | None) -> bytes:
        """Newest first."""
        after = decode_cursor(cursor, MEMBER_CURSOR)
        index = self.views.ledger(tenant_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
        pipe.zcard(index)
        members, total = await pipe.execute()
        page = members[:limit]
        ids = [m.decode().rsplit("|", 1)[1] for m in page]
        docs = await self.redis.hmget(self.views.entries(tenant_id), ids) if ids else []
        more = len(members) > limit and page
        next_cursor = encode_cursor(page[-1].decode()) if more else None
        return page_json([d for d in docs if d is not None], next_cursor, total)

    async def usage(self, tenant_id: str, start: date | None, end: date | None) -> UsageReport:
        """Usage over the days in [start, end] (every day with usage when not given)."""
        days = [d.decode() for d in await self.redis.zrange(self.views.days(tenant_id), 0, -1)]
        if start is not None:
            days = [d for d in days if d >= start.isoformat()]
        if end is not None:
            days = [d for d in days if d <= end.isoformat()]
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.views.usage(tenant_id, day))
        hashes = await pipe.execute() if days else []
        by_tier: dict[str, dict[str, int]] = {}
        by_agent: dict[str, dict[str, int]] = {}
        by_day = []
        for day, raw in zip(days, hashes, strict=True):
            fields = {k.decode(): int(v) for k, v in raw.items()}
            total = {f: fields.get(f"total:{f}", 0) for f in UsageFigures.__struct_fields__}
            by_day.append(DayUsage(date=day, **total))
            for name, value in fields.items():
                group, _, figure = name.rpartition(":")
                kind, _, which = group.partition(":")
                target = by_tier if kind == "tier" else by_agent if kind == "agent" else None
                if target is not None:
                    sums = target.setdefault(
                        which, dict.fromkeys(UsageFigures.__struct_fields__, 0)
                    )
                    sums[figure] += value
        return UsageReport(
            credits=await self.credits(tenant_id),
            by_tier={t: UsageFigures(**v) for t, v in sorted(by_tier.items())},
            by_day=by_day,
            by_agent=[AgentUsage(agent_id=a, **v) for a, v in sorted(by_agent.items())],
        )

    async def expiring(self, now: float, *, limit: int = 100) -> list[tuple[str, str]]:
        """`(tenant, grant)` of grants past their expiry (the expiry job's work)."""
        members = await self.redis.zrangebyscore(self.views.expiring(), 0, now, start=0, num=limit)
        return [split_member(m) for m in members]
