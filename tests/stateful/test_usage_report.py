"""The usage report against a plain sum: over any range of days and in any grouping, what
GET /v1/account/usage answers from its read model (per-day hashes, an all-days hash summed
ahead, the days' index) equals summing the settled runs of those days one by one.

Runs are sealed as the application seals them (a run's creation and end on its stream, its
reservation and settlement on the account) and applied through the accounts projection into
Redis under a key prefix of this run's own.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nome_core.accounts.decide import starting_grant
from nome_core.accounts.events import CreditsConsumed, CreditsReleased, CreditsReserved
from nome_core.accounts.state import account_stream_id
from nome_core.clock import format_time
from nome_core.events import Client, Event, Head, Meta, head_of, seal
from nome_core.runs import events as ev
from projections.accounts import AccountQueries, AccountsProjection, Grouping
from projections.engine import View
from tests.support.env import REDIS_URL, unique

TENANT = "00000000-0000-0000-0000-0000000000aa"
TIERS = ("fast", "standard", "deep")
AGENTS = ("agent-a", "agent-b", "agent-c")
FIRST_DAY = date(2026, 3, 1)
FIGURES = ("runs", "input_tokens", "output_tokens", "credits")


class Run(NamedTuple):
    day: int  # days after FIRST_DAY
    tier: str
    agent_id: str
    input_tokens: int
    output_tokens: int
    credits: int


runs_st = st.lists(
    st.builds(
        Run,
        st.integers(0, 6),
        st.sampled_from(TIERS),
        st.sampled_from(AGENTS),
        st.integers(0, 900),
        st.integers(0, 900),
        st.integers(0, 10),
    ),
    max_size=25,
)
bound_st = st.none() | st.integers(-1, 7).map(lambda d: FIRST_DAY + timedelta(days=d))


class _Clock:
    def __init__(self) -> None:
        self.at = format_time(datetime(2026, 2, 1, tzinfo=UTC))
        self._ids = itertools.count()

    def now(self) -> str:
        return self.at

    def new_id(self) -> str:
        return f"00000000-0000-0000-0000-{next(self._ids):012x}"


def sealed_log(runs: list[Run]) -> list[Event]:
    """The tenant's starting grant, then each run as its commits leave it."""
    clock, meta = _Clock(), Meta(principal="test")
    account = account_stream_id(TENANT)

    def sealed(drafts: list[Any], stream: str, head: Head, run_id: str | None) -> list[Event]:
        return seal(
            drafts,
            stream_id=stream,
            head=head,
            tenant_id=TENANT,
            thread_id=None,
            run_id=run_id,
            meta=meta,
            clock=clock,
        )

    log = sealed(starting_grant("enterprise", clock.new_id()), account, Head(), None)
    head = head_of(log)
    snapshot = ev.AgentSnapshot(provider="scripted", model="m", instructions="", tools=[])
    for run in runs:
        run_id = clock.new_id()
        ended = datetime.combine(FIRST_DAY + timedelta(days=run.day), datetime.min.time(), UTC)
        clock.at = format_time(ended - timedelta(seconds=30))
        made = ev.RunCreated(
            input="a run",
            agent_id=run.agent_id,
            tier=run.tier,
            domain_hints=[],
            client=Client(surface="test"),
            agent=snapshot,
            creator_roles=["admin"],
        )
        created = sealed([made], run_id, Head(), run_id)
        reserved = sealed([CreditsReserved(run_id=run_id, amount=50)], account, head, None)
        clock.at = format_time(ended + timedelta(hours=1))
        usage = ev.Usage(
            input_tokens=run.input_tokens, output_tokens=run.output_tokens, credits=run.credits
        )
        done = ev.RunCompleted(usage=usage, output="done")
        end = sealed([done], run_id, head_of(created), run_id)
        settle = [
            CreditsConsumed(run_id=run_id, amount=run.credits),
            CreditsReleased(run_id=run_id, amount=50 - run.credits),
        ]
        settled = sealed(settle, account, head_of(reserved), None)
        head = head_of(settled)
        log += [*created, *reserved, *end, *settled]
    return log


def project(client: redis.Redis, views: AccountsProjection, log: list[Event]) -> None:
    """Apply the log as the projector does: each event's changes, then its commands."""
    for event in log:
        view = View(client, fresh=False)
        if views.wants(event):
            views.apply(event, view)
        ops, pipe = iter(view.ops), client.pipeline()
        for size in ops:
            command, *args = itertools.islice(ops, int(size))
            pipe.execute_command(command, *args)
        pipe.execute()


def expected(runs: list[Run], start: date | None, end: date | None) -> dict[str, Any]:
    """The report summed run by run."""
    low = (start - FIRST_DAY).days if start else -1
    high = (end - FIRST_DAY).days if end else 99
    chosen = [r for r in runs if low <= r.day <= high]

    def figures(of: list[Run]) -> dict[str, int]:
        return {
            "runs": len(of),
            "input_tokens": sum(r.input_tokens for r in of),
            "output_tokens": sum(r.output_tokens for r in of),
            "credits": sum(r.credits for r in of),
        }

    days = sorted({r.day for r in chosen})
    return {
        "by_tier": {
            t: figures([r for r in chosen if r.tier == t])
            for t in TIERS
            if any(r.tier == t for r in chosen)
        },
        "by_day": [
            {
                "date": (FIRST_DAY + timedelta(days=d)).isoformat(),
                **figures([r for r in chosen if r.day == d]),
            }
            for d in days
        ],
        "by_agent": [
            {"agent_id": a, **figures([r for r in chosen if r.agent_id == a])}
            for a in AGENTS
            if any(r.agent_id == a for r in chosen)
        ],
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=runs_st,
    start=bound_st,
    end=bound_st,
    group_by=st.sampled_from([None, "tier", "day", "agent"]),
)
def test_the_usage_report_is_the_sum_of_the_runs_of_its_days(
    runs: list[Run], start: date | None, end: date | None, group_by: Grouping | None
) -> None:
    prefix = unique("usage") + ":"
    views = AccountsProjection(prefix)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        project(client, views, sealed_log(runs))
        report = asyncio.run(_report(views, start, end, group_by))
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    want = expected(runs, start, end)
    groups = {"tier": "by_tier", "day": "by_day", "agent": "by_agent"}
    shown = set(groups.values()) if group_by is None else {groups[group_by]}
    assert {k: v for k, v in report.items() if k != "credits"} == {k: want[k] for k in shown}
    assert report["credits"]["consumed"] == sum(r.credits for r in runs)


async def _report(
    views: AccountsProjection, start: date | None, end: date | None, group_by: Grouping | None
) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        report = await AccountQueries(views, client).usage(TENANT, start, end, group_by)
    finally:
        await client.aclose()
    return msgspec.to_builtins(report)  # type: ignore[no-any-return]
