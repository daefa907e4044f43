"""Account read models: each tenant's account as the domain folds it (credits by grant,
reservations), its ledger (newest first), its usage by day with tiers and agents, and the
grants due to expire; and their queries. Usage is kept per day, so a report over any range
reads one hash a day, whatever the number of runs."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any, Literal

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

    def usage_ever(self, tenant_id: str) -> str:
        """Every day's usage summed: a report over all days reads it, not each day's."""
        return self.key("usage-ever", tenant_id)

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
                view.zadd(self.days(tenant), 0, facts.day)
                for key in (self.usage(tenant, facts.day), self.usage_ever(tenant)):
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
            for key in (self.usage(tenant, day), self.usage_ever(tenant)):
                for group in facts.groups:
                    view.hincrby(key, f"{group}:credits", data.amount)
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


_FIGURES = UsageFigures.__struct_fields__
_TOTALS = [f"total:{figure}" for figure in _FIGURES]
Grouping = Literal["tier", "agent", "day"]


@functools.lru_cache(maxsize=65_536)
def _field(name: bytes) -> tuple[str, str, str]:
    """A usage hash field's group kind, group and figure: `tier:fast:runs` is ("tier",
    "fast", "runs"), `total:credits` ("total", "", "credits"). Cached: a report over 90
    days reads the same few dozen names 90 times, and parsing each anew was most of its
    time."""
    group, _, figure = name.decode().rpartition(":")
    kind, _, which = group.partition(":")
    return kind, which, figure


def _credits(raw: bytes | None, tenant_id: str) -> Credits:
    account = _decode_account(raw) if raw else AccountState(tenant_id=tenant_id)
    return Credits(
        balance=account.balance,
        available=account.available,
        reserved=account.reserved,
        granted=account.granted,
        consumed=account.consumed,
        expired=account.expired,
    )


class AccountQueries:
    def __init__(self, views: AccountsProjection, redis: Any) -> None:
        self.views = views
        self.redis = redis

    async def credits(self, tenant_id: str) -> Credits:
        return _credits(await self.redis.get(self.views.account(tenant_id)), tenant_id)

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

    async def usage(
        self,
        tenant_id: str,
        start: date | None,
        end: date | None,
        group_by: Grouping | None = None,
    ) -> UsageReport:
        """Usage over the days in [start, end] (every day with usage when not given), in
        the grouping asked for (all three when none is). Two round trips whatever the range:
        the days, then the account, each day's totals and the groups' figures, summed
        ahead for a range of every day."""
        days_key = self.views.days(tenant_id)
        low = f"[{start.isoformat()}" if start is not None else "-"
        high = f"[{end.isoformat()}" if end is not None else "+"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebylex(days_key, low, high)
        pipe.zcard(days_key)
        listed, known = await pipe.execute()
        days = [d.decode() for d in listed]
        every_day = len(days) == known
        by_day = group_by in (None, "day")
        by_group = group_by in (None, "tier", "agent")

        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.views.account(tenant_id))
        for day in days if by_day else ():
            pipe.hmget(self.views.usage(tenant_id, day), _TOTALS)
        summed = [self.views.usage_ever(tenant_id)] if every_day else []
        for key in summed or [self.views.usage(tenant_id, day) for day in days]:
            if by_group:
                pipe.hgetall(key)
        account, *replies = await pipe.execute()
        totals, hashes = (replies[: len(days)], replies[len(days) :]) if by_day else ([], replies)

        groups: dict[str, dict[str, dict[str, int]]] = {"tier": {}, "agent": {}}
        for raw in hashes:
            for name, value in raw.items():
                kind, which, figure = _field(name)
                if kind in groups:
                    sums = groups[kind].get(which)
                    if sums is None:
                        sums = groups[kind][which] = dict.fromkeys(_FIGURES, 0)
                    sums[figure] += int(value)
        report = UsageReport(credits=_credits(account, tenant_id))
        if by_day:
            report.by_day = [
                DayUsage(date=day, **{f: int(v or 0) for f, v in zip(_FIGURES, row, strict=True)})
                for day, row in zip(days, totals, strict=True)
            ]
        if group_by in (None, "tier"):
            report.by_tier = {t: UsageFigures(**v) for t, v in sorted(groups["tier"].items())}
        if group_by in (None, "agent"):
            report.by_agent = [
                AgentUsage(agent_id=a, **v) for a, v in sorted(groups["agent"].items())
            ]
        return report

    async def expiring(self, now: float, *, limit: int = 100) -> list[tuple[str, str]]:
        """`(tenant, grant)` of grants past their expiry (the expiry job's work)."""
        members = await self.redis.zrangebyscore(self.views.expiring(), 0, now, start=0, num=limit)
        return [split_member(m) for m in members]
