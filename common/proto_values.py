"""Protobuf <-> plain values shared by every converter: times, durations, resources,
latency summaries and the enums (instance states, slots, state modes, GC kinds).

Enums map by name (``InstanceState.RUNNING`` <-> ``INSTANCE_STATE_RUNNING``), never by
position, so adding a value on one side cannot shift the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from common.errors import InvalidArgument, LandlordError
from common.gc_kinds import GcKind
from common.gen.landlord.v1 import types_pb2
from common.latency import LatencySketch
from common.lifecycle import InstanceState
from common.resources import Resources

__all__ = [
    "duration_from_pb",
    "duration_to_pb",
    "gc_kinds_from_pb",
    "gc_kinds_to_pb",
    "latency_from_pb",
    "latency_to_pb",
    "resources_from_pb",
    "resources_to_pb",
    "slot_from_pb",
    "slot_to_pb",
    "state_from_pb",
    "state_mode_from_pb",
    "state_mode_to_pb",
    "state_to_pb",
    "timestamp_from_pb",
    "timestamp_to_pb",
]

_E = TypeVar("_E", bound=StrEnum)


# -- time ------------------------------------------------------------------------------
def timestamp_to_pb(epoch: float) -> timestamp_pb2.Timestamp:
    """Seconds since the epoch; 0 (unknown) stays the empty timestamp."""
    if not epoch:
        return timestamp_pb2.Timestamp()
    whole = math.floor(epoch)
    carry, nanos = divmod(round((epoch - whole) * 1e9), 10**9)
    return timestamp_pb2.Timestamp(seconds=whole + carry, nanos=nanos)


def timestamp_from_pb(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def duration_to_pb(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))  # whole and fractional parts share the sign
    return d


def duration_from_pb(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


# -- amounts ---------------------------------------------------------------------------
def resources_to_pb(r: Resources) -> types_pb2.Resources:
    return types_pb2.Resources(cpu_millis=round(r.cpu * 1000), memory_bytes=r.memory,
                               storage_bytes=r.storage, network_bps=r.network)


def resources_from_pb(pb: types_pb2.Resources, what: str = "resources") -> Resources:
    values = (pb.cpu_millis, pb.memory_bytes, pb.storage_bytes, pb.network_bps)
    if any(v < 0 for v in values):
        raise InvalidArgument(f"{what} must not be negative", field=what)
    return Resources(cpu=pb.cpu_millis / 1000.0, memory=pb.memory_bytes,
                     storage=pb.storage_bytes, network=pb.network_bps)


def latency_to_pb(sketch: LatencySketch) -> types_pb2.LatencySummary:
    return types_pb2.LatencySummary(
        relative_accuracy=sketch.relative_accuracy, positive_buckets=sketch.buckets,
        zero_count=sketch.zero_count, count=sketch.count, sum_ms=sketch.sum,
        min_ms=sketch.min or 0.0, max_ms=sketch.max or 0.0)


def latency_from_pb(pb: types_pb2.LatencySummary) -> LatencySketch | None:
    """The sketch of a summary; None when it is empty or malformed."""
    if not pb.count:
        return None
    try:
        return LatencySketch.from_buckets(pb.relative_accuracy or 0.01, pb.positive_buckets,
                                          pb.zero_count, pb.sum_ms, pb.min_ms, pb.max_ms)
    except LandlordError:
        return None


# -- enums -----------------------------------------------------------------------------
def state_to_pb(state: InstanceState | str) -> types_pb2.InstanceState.ValueType:
    """An instance state; "" (not known) is UNSPECIFIED."""
    if not state:
        return types_pb2.INSTANCE_STATE_UNSPECIFIED
    return types_pb2.InstanceState.Value(f"INSTANCE_STATE_{InstanceState(state).name}")


def state_from_pb(value: int) -> InstanceState | None:
    """The state of a proto value; None for UNSPECIFIED or one this side does not know."""
    return _member(InstanceState, "InstanceState", "INSTANCE_STATE_", value)


def slot_to_pb(slot: str) -> types_pb2.Slot.ValueType:
    """"blue" or "green"; anything else is UNSPECIFIED."""
    if slot not in ("blue", "green"):
        return types_pb2.SLOT_UNSPECIFIED
    return types_pb2.Slot.Value(f"SLOT_{slot.upper()}")


def slot_from_pb(value: int) -> str:
    """"blue", "green", or "" when unspecified."""
    return _name("Slot", "SLOT_", value)


def state_mode_to_pb(mode: str) -> types_pb2.StateMode.ValueType:
    """"shared" or "snapshot"; "none" (or anything else) is UNSPECIFIED (stateless)."""
    if mode not in ("shared", "snapshot"):
        return types_pb2.STATE_MODE_UNSPECIFIED
    return types_pb2.StateMode.Value(f"STATE_MODE_{mode.upper()}")


def state_mode_from_pb(value: int) -> str:
    """"shared", "snapshot", or "none" when unspecified."""
    return _name("StateMode", "STATE_MODE_", value) or "none"


def gc_kinds_to_pb(kinds: Iterable[GcKind]) -> list[types_pb2.GcKind.ValueType]:
    return [types_pb2.GcKind.Value(f"GC_KIND_{GcKind(k).name}") for k in kinds]


def gc_kinds_from_pb(values: Iterable[int], field: str = "gc_kinds") -> tuple[GcKind, ...]:
    """The kinds of a request, in order without repeats; InvalidArgument for UNSPECIFIED
    or a value this side does not know."""
    kinds: list[GcKind] = []
    for value in values:
        kind = _member(GcKind, "GcKind", "GC_KIND_", value)
        if kind is None:
            raise InvalidArgument(f"{field}: unknown garbage collection kind {value} (known: "
                                  f"{', '.join(GcKind)})", field=field)
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


@lru_cache(maxsize=512)  # a hot path (every reported status); bounded: values come from peers
def _name(enum: str, prefix: str, value: int) -> str:
    """The name of a value of proto enum ``enum`` without its prefix, lower case; "" for
    UNSPECIFIED and values not in this generated code."""
    found = types_pb2.DESCRIPTOR.enum_types_by_name[enum].values_by_number.get(value)
    suffix = found.name.removeprefix(prefix) if found is not None else "UNSPECIFIED"
    return "" if suffix == "UNSPECIFIED" else suffix.lower()


@lru_cache(maxsize=512)
def _member(kind: type[_E], enum: str, prefix: str, value: int) -> _E | None:
    """The member of ``kind`` named like the proto value (by name, never by position)."""
    return kind.__members__.get(_name(enum, prefix, value).upper())
