"""Account errors (API.md §0, §6)."""

from __future__ import annotations

from nome_core.errors import DomainError


class InsufficientCredits(DomainError):
    code = "insufficient_credits"

    def __init__(self, *, required: int, available: int) -> None:
        super().__init__(
            "the tenant has not enough credits left", required=required, available=available
        )


class BillingInactive(DomainError):
    code = "billing_inactive"

    def __init__(self, status: str) -> None:
        super().__init__(
            f"the tenant's billing is {status}: work cannot start until it is settled "
            "(reads, exports and deletions keep working)"
        )


class LimitReached(DomainError):
    code = "limit_reached"

    def __init__(self, what: str, *, limit: int, current: int) -> None:
        super().__init__(f"the tenant's {what} limit is reached", limit=limit, current=current)


class EntitlementRequired(DomainError):
    code = "entitlement_required"

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"the tenant lacks {', '.join(missing)}", missing=missing)
