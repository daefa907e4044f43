"""Account events: the tenant's credits, one stream per tenant (API.md §6)."""

from __future__ import annotations

from nome_core.events import DomainEvent, event_type


@event_type("credits.consumed")
class CreditsConsumed(DomainEvent, frozen=True, kw_only=True):
    """A run's cost, recorded in the same commit as the run's end; it names its run."""

    run_id: str
    amount: int
