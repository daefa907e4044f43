"""Account events: one stream per tenant holds its credits ledger and its runs' places in
the tenant's concurrency queue (API.md §6). Every debit names its run."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("credits.granted")
class CreditsGranted(DomainEvent, frozen=True, kw_only=True):
    grant_id: str
    amount: int
    kind: str  # paid | promotional
    expires_at: str | None = None
    reason: str = ""


@event_type("credits.reserved")
class CreditsReserved(DomainEvent, frozen=True, kw_only=True):
    """A new run's most it can cost, held in the commit that creates the run."""

    run_id: str
    amount: int


@event_type("credits.consumed")
class CreditsConsumed(DomainEvent, frozen=True, kw_only=True):
    """A run's cost, in the commit of the run's end; it names its run."""

    run_id: str
    amount: int


@event_type("credits.released")
class CreditsReleased(DomainEvent, frozen=True, kw_only=True):
    """What a run reserved and did not cost, given back in the commit of its end."""

    run_id: str
    amount: int


@event_type("credits.expired")
class CreditsExpired(DomainEvent, frozen=True, kw_only=True):
    """The unspent rest of a grant past its expiry leaves the balance."""

    grant_id: str
    amount: int


@event_type("slots.waiting")
class RunWaiting(DomainEvent, frozen=True, kw_only=True):
    """A run its thread has admitted waits for one of the tenant's run slots (FIFO)."""

    run_id: str


@event_type("slots.taken")
class SlotTaken(DomainEvent, frozen=True, kw_only=True):
    """The run starts: one of the tenant's `max_concurrent_runs` is its own until it ends."""

    run_id: str


@event_type("slots.freed")
class SlotFreed(DomainEvent, frozen=True, kw_only=True):
    run_id: str


@event_type("quota.taken")
class QuotaTaken(DomainEvent, frozen=True, kw_only=True):
    """One more of a limited resource (`threads`, `installs`), in the commit that makes it;
    the tenant's quota stream counts them, so concurrent creations never pass the limit."""

    resource: str
    id: str


@event_type("quota.freed")
class QuotaFreed(DomainEvent, frozen=True, kw_only=True):
    """One fewer, in the commit that deletes it."""

    resource: str
    id: str
