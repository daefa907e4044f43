"""Events as the tests generate them: Hypothesis strategies for the payload of every
registered event type and for whole recorded events, and a row in the first stored format.

Payloads are generated from the msgspec type information of each registered class, so an
event type added to any context is covered the moment it is registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

import nome_core
import nome_core.application  # registers every context the application wires
from nome_core.events import EVENT_TYPES, DomainEvent, Event, Meta

# Contexts not (yet) wired into the application still have their events checked.
for _module in pkgutil.walk_packages(nome_core.__path__, "nome_core."):
    if _module.name.endswith(".events"):
        importlib.import_module(_module.name)

# -- strategies --------------------------------------------------------------------------

# What an `Any` field (tool arguments, tool results) may hold: JSON values. Floats are finite
# because JSON has no NaN or infinity; integers are unbounded because arguments may exceed
# 64 bits.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values msgspec accepts for a type, constraints included."""
    match info:
        case mi.AnyType():
            return json_values
        case mi.NoneType():
            return st.none()
        case mi.BoolType():
            return st.booleans()
        case mi.IntType(ge=ge, gt=gt, le=le, lt=lt):
            low = ge if ge is not None else (gt + 1 if gt is not None else None)
            high = le if le is not None else (lt - 1 if lt is not None else None)
            return st.integers(low, high)
        case mi.FloatType(ge=ge, le=le):
            return st.floats(ge, le, allow_nan=False, allow_infinity=False)
        case mi.StrType(min_length=low, max_length=high, pattern=pattern):
            if pattern is not None:
                return st.from_regex(pattern, fullmatch=True)
            return st.text(min_size=low or 0, max_size=high if high is not None else 40)
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.ListType(item_type=item, min_length=low, max_length=high):
            return st.lists(strategy_for(item), min_size=low or 0, max_size=high or 5)
        case mi.VarTupleType(item_type=item, min_length=low, max_length=high):
            return st.lists(strategy_for(item), min_size=low or 0, max_size=high or 5).map(tuple)
        case mi.TupleType(item_types=items):
            return st.tuples(*(strategy_for(i) for i in items))
        case mi.DictType(key_type=key, value_type=value, min_length=low, max_length=high):
            return st.dictionaries(
                strategy_for(key), strategy_for(value), min_size=low or 0, max_size=high or 5
            )
        case mi.UnionType(types=types):
            return st.one_of(*(strategy_for(t) for t in types))
        case mi.StructType(cls=cls, fields=fields):
            return st.builds(cls, **{f.name: _field_strategy(f) for f in fields})
    raise TypeError(f"teach strategy_for() to generate {info!r}")


def _field_strategy(field: mi.Field) -> st.SearchStrategy[Any]:
    values = strategy_for(field.type)
    if field.required:
        return values
    if field.default_factory is not msgspec.NODEFAULT:
        return st.builds(field.default_factory) | values
    return st.just(field.default) | values


def event_payloads(cls: type[DomainEvent]) -> st.SearchStrategy[DomainEvent]:
    return strategy_for(mi.type_info(cls))


any_payload: st.SearchStrategy[DomainEvent] = st.sampled_from(sorted(EVENT_TYPES)).flatmap(
    lambda name: event_payloads(EVENT_TYPES[name])
)
stream_ids = st.uuids().map(str)
hashes = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
metas: st.SearchStrategy[Meta] = strategy_for(mi.type_info(Meta))


@st.composite
def recorded_events(
    draw: st.DrawFn, payloads: st.SearchStrategy[DomainEvent] = any_payload
) -> Event:
    """An event as `seal` would make it, with arbitrary ids, metadata and chain links."""
    data = draw(payloads)
    return Event(
        id=draw(stream_ids),
        type=data.type,
        tenant_id=draw(st.text(min_size=1, max_size=20)),
        stream_id=draw(stream_ids),
        thread_id=draw(st.none() | stream_ids),
        run_id=draw(st.none() | stream_ids),
        work_item_id=draw(st.none() | stream_ids),
        seq=draw(st.integers(1, 2**31 - 1)),
        at=draw(st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))),
        data=data,
        hash=draw(hashes),
        prev_hash=draw(st.none() | hashes),
        meta=draw(metas),
    )


# A row written by the first release, byte for byte. It must keep decoding to the same event
# and re-encoding to the same bytes for as long as the log exists.
GOLDEN_ROW = (
    '{"id":"00000000-0000-4000-8000-000000000001","type":"thread.created","tenant_id":"acme",'
    '"stream_id":"00000000-0000-4000-8000-0000000000aa",'
    '"thread_id":"00000000-0000-4000-8000-0000000000aa","run_id":null,"work_item_id":null,'
    '"seq":1,"at":"2025-01-02T03:04:05.000006Z","data":{"title":"Grüße","metadata":{"k":"v"}},'
    '"hash":"sha256:1a9cacf48a46d3e9c9fc4754c5850ce95e70c98185362461a652349e2635bf68",'
    '"prev_hash":null,"meta":{"principal":"key-1","client":{"surface":"cli","version":"1.2.3",'
    '"revision":null},"request_id":"req-9"}}'
).encode()
