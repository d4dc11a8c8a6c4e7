"""One set of GC kinds for CLI, admin API, stream and agent (a kind one side accepted and
the other refused was a defect: `gc run --kind unused` failed on every host)."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from common.gc_kinds import GcKind, parse_gc_kinds
from common.gen.landlord.v1 import types_pb2
from common.proto_values import gc_kinds_from_pb, gc_kinds_to_pb


def test_the_kinds_are_the_plans_words() -> None:
    assert [str(k) for k in GcKind] == ["unused", "memory", "cache"]


def test_names_parse_in_order_without_repeats() -> None:
    assert parse_gc_kinds(["cache", "unused", "cache"]) == (GcKind.CACHE, GcKind.UNUSED)
    assert parse_gc_kinds([]) == ()


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="--kind: 'idle' is not one of unused, memory, "
                                              "cache"):
        parse_gc_kinds(["unused", "idle"], "--kind")


def test_every_kind_crosses_the_wire_and_back() -> None:
    values = gc_kinds_to_pb(GcKind)
    assert values == [types_pb2.GC_KIND_UNUSED, types_pb2.GC_KIND_MEMORY,
                      types_pb2.GC_KIND_CACHE]
    assert gc_kinds_from_pb(values) == tuple(GcKind)


def test_every_proto_value_but_unspecified_is_a_kind() -> None:
    known = [v for v in types_pb2.GcKind.values() if v != types_pb2.GC_KIND_UNSPECIFIED]
    assert len(gc_kinds_from_pb(known)) == len(known) == len(GcKind)


@pytest.mark.parametrize("value", [types_pb2.GC_KIND_UNSPECIFIED, 42])
def test_unspecified_or_unknown_values_are_refused(value: int) -> None:
    with pytest.raises(InvalidArgument, match=f"unknown garbage collection kind {value}"):
        gc_kinds_from_pb([value])
