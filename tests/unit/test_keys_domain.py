"""API keys and tenants: decide validates, evolve folds, and no secret reaches an event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec
import pytest

from nome_core.bus import owned_by
from nome_core.errors import Conflict, Invalid, NotFound
from nome_core.events import DomainEvent, Event, Head, Meta, seal
from nome_core.keys import decide as keys
from nome_core.keys import secrets
from nome_core.keys.commands import CreateKey, RevokeKey
from nome_core.keys.events import KeyCreated, KeyRevoked
from nome_core.keys.roles import effective_roles
from nome_core.keys.state import KeyState
from nome_core.keys.state import evolve as evolve_key
from nome_core.storage.rows import to_stored
from nome_core.tenants import decide as tenants
from nome_core.tenants.commands import CreateTenant
from nome_core.tenants.events import TenantCreated
from nome_core.tenants.state import TenantState, tenant_id_for
from nome_core.tenants.state import evolve as evolve_tenant
from nome_core.values import ROLES
from tests.support.fakes import StepClock

TENANT = tenant_id_for("acme")
KEY = "00000000-0000-4000-8000-0000000000bb"
NEW_STREAM = Head()


def record(
    stream_id: str,
    tenant_id: str,
    payloads: Sequence[DomainEvent],
    head: Head = NEW_STREAM,
    clock: StepClock | None = None,
) -> list[Event]:
    return seal(
        payloads,
        stream_id=stream_id,
        head=head,
        tenant_id=tenant_id,
        thread_id=None,
        run_id=None,
        meta=Meta(),
        clock=clock or StepClock(),
    )


def create(name: str, roles: list[str], sha: str, hint: str) -> list[DomainEvent]:
    cmd = CreateKey(key_id=KEY, name=name, roles=roles, key_sha256=sha, hint=hint)
    return keys.decide(cmd, None)


def revoke(state: KeyState | None, tenant: str) -> list[DomainEvent]:
    """As the bus runs it: another tenant's key is loaded as a missing one."""
    return keys.decide(RevokeKey(key_id=KEY), owned_by(state, tenant))


def create_tenant(state: TenantState | None, name: str, plan: str = "free") -> list[DomainEvent]:
    return tenants.decide(CreateTenant(tenant_id=tenant_id_for(name), name=name, plan=plan), state)


def key_state(*, tenant_id: str = TENANT, revoked: bool = False) -> KeyState | None:
    raw, clock = secrets.generate(), StepClock()
    events = record(
        KEY,
        tenant_id,
        create("ci", ["member"], secrets.digest(raw), secrets.hint(raw)),
        clock=clock,
    )
    if revoked:
        events += record(KEY, tenant_id, [KeyRevoked()], Head(1, events[-1].hash), clock)
    state: KeyState | None = None
    for event in events:
        state = evolve_key(state, event)
    return state


# -- keys --------------------------------------------------------------------------------


def test_creating_a_key_records_its_roles_sorted_without_duplicates() -> None:
    (created,) = create("ci", ["operator", "member", "operator"], "f" * 64, "nome_sk_abcd")

    assert created == KeyCreated(
        name="ci", roles=["member", "operator"], key_sha256="f" * 64, hint="nome_sk_abcd"
    )


@pytest.mark.parametrize("role", ROLES)
def test_every_known_role_can_be_granted_alone(role: str) -> None:
    (created,) = create("k", [role], "f" * 64, "h")

    assert isinstance(created, KeyCreated)
    assert created.roles == [role]


@pytest.mark.parametrize(
    "roles",
    [[], ["root"], ["admin", "root"], ["Admin"], [""]],
    ids=["none", "unknown", "known and unknown", "wrong case", "empty name"],
)
def test_a_key_needs_a_non_empty_set_of_known_roles(roles: list[str]) -> None:
    with pytest.raises(Invalid):
        create("k", roles, "f" * 64, "h")


def test_the_raw_key_never_reaches_the_stored_event() -> None:
    raw = secrets.generate()
    (event,) = record(KEY, TENANT, create("ci", ["admin"], secrets.digest(raw), secrets.hint(raw)))

    stored = to_stored(event).state

    assert raw.encode() not in stored
    assert raw[len(secrets.PREFIX) :].encode() not in stored
    assert secrets.digest(raw).encode() in stored


def test_a_created_key_folds_into_its_state() -> None:
    created = KeyCreated(name="ci", roles=["admin"], key_sha256="a" * 64, hint="nome_sk_wxyz")
    (event,) = record(KEY, TENANT, [created])

    assert evolve_key(None, event) == KeyState(
        id=KEY,
        tenant_id=TENANT,
        name="ci",
        roles=["admin"],
        key_sha256="a" * 64,
        hint="nome_sk_wxyz",
        created_at=event.at,
    )


def test_revoking_a_live_key_of_ones_own_tenant_records_the_revocation() -> None:
    state = key_state()

    assert revoke(state, TENANT) == [KeyRevoked()]


def test_a_revoked_key_keeps_the_time_of_its_revocation() -> None:
    state = key_state(revoked=True)

    assert state is not None
    assert state.revoked_at is not None
    assert state.revoked_at > state.created_at


@pytest.mark.parametrize(
    ("state", "tenant"),
    [
        (None, TENANT),
        (key_state(tenant_id=tenant_id_for("globex")), TENANT),
        (key_state(revoked=True), TENANT),
    ],
    ids=["unknown key", "another tenant's key", "already revoked key"],
)
def test_revoking_a_key_that_is_not_a_live_key_of_the_tenant_is_not_found(
    state: KeyState | None, tenant: str
) -> None:
    with pytest.raises(NotFound):
        revoke(state, tenant)


def test_admin_implies_every_role_and_other_roles_imply_viewer() -> None:
    assert effective_roles(["admin"]) == frozenset(ROLES)
    for role in set(ROLES) - {"admin"}:
        assert effective_roles([role]) == {"viewer", role}
    assert effective_roles(["root"]) == frozenset()


def test_generated_keys_are_well_formed_and_distinct() -> None:
    first, second = secrets.generate(), secrets.generate()

    assert secrets.is_well_formed(first)
    assert secrets.is_well_formed(second)
    assert first != second
    assert not secrets.is_well_formed(first + "x")


# -- tenants -----------------------------------------------------------------------------


def test_creating_a_new_tenant_records_its_name_and_plan() -> None:
    assert create_tenant(None, "acme", "pro") == [TenantCreated(name="acme", plan="pro")]
    assert create_tenant(None, "acme") == [TenantCreated(name="acme", plan="free")]


def test_creating_a_tenant_that_exists_is_a_conflict() -> None:
    (event,) = record(TENANT, TENANT, create_tenant(None, "acme"))
    state = evolve_tenant(None, event)

    with pytest.raises(Conflict):
        create_tenant(state, "acme")


def test_a_created_tenant_folds_into_its_state() -> None:
    (event,) = record(TENANT, TENANT, [TenantCreated(name="acme", plan="pro")])

    assert evolve_tenant(None, event) == TenantState(
        id=TENANT, name="acme", plan="pro", created_at=event.at
    )


def test_a_tenant_id_is_derived_from_its_name_alone() -> None:
    assert tenant_id_for("acme") == tenant_id_for("acme")
    assert tenant_id_for("acme") != tenant_id_for("Acme")
    assert uuid.UUID(tenant_id_for("acme")).version == 5


def test_a_tenant_event_decoded_from_an_old_row_without_a_plan_defaults_to_free() -> None:
    assert msgspec.json.decode(b'{"name":"acme"}', type=TenantCreated) == TenantCreated(
        name="acme", plan="free"
    )
