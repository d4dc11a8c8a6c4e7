"""LatencySketch: quantiles within 1 %, exact merges, compact JSON."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.latency import LatencySketch

latencies = st.floats(min_value=0.0, max_value=600_000.0, allow_nan=False, allow_infinity=False)
quantiles = st.floats(min_value=0.0, max_value=1.0)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def within_bound(estimate: float | None, truth: float, accuracy: float = 0.01) -> bool:
    assert estimate is not None
    return abs(estimate - truth) <= accuracy * truth + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=300), quantiles)
def test_quantile_is_within_the_relative_bound(values: list[float], q: float) -> None:
    sketch = LatencySketch.of(values)
    assert sketch.count == len(values)
    assert within_bound(sketch.quantile(q), exact_quantile(values, q))


@settings(max_examples=200, deadline=None)
@given(st.lists(latencies, max_size=150), st.lists(latencies, max_size=150), quantiles)
def test_merge_equals_the_sketch_of_the_union(
    left: list[float], right: list[float], q: float
) -> None:
    merged = LatencySketch.of(left)
    merged.merge(LatencySketch.of(right))
    union = LatencySketch.of(left + right)
    assert merged == union
    assert merged.count == union.count == len(left) + len(right)
    assert merged.quantile(q) == union.quantile(q)
    if left or right:
        assert within_bound(merged.quantile(q), exact_quantile(left + right, q))
        assert merged.min == min(left + right) and merged.max == max(left + right)
        assert merged.sum == pytest.approx(sum(left + right))


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, max_size=200))
def test_json_round_trip_keeps_everything(values: list[float]) -> None:
    sketch = LatencySketch.of(values)
    again = LatencySketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert again == sketch
    assert (again.count, again.min, again.max) == (sketch.count, sketch.min, sketch.max)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert again.quantile(q) == sketch.quantile(q)


def test_empty_sketch() -> None:
    sketch = LatencySketch()
    assert sketch.count == 0
    assert sketch.quantile(0.95) is None
    assert sketch.mean is None and sketch.min is None and sketch.max is None
    assert LatencySketch.from_dict(sketch.to_dict()) == sketch


def test_weighted_add_and_zero_latency() -> None:
    sketch = LatencySketch()
    sketch.add(0, count=90)
    sketch.add(250.0, count=10)
    assert sketch.count == 100
    assert sketch.quantile(0.5) == 0.0
    assert within_bound(sketch.quantile(0.95), 250.0)
    assert sketch.mean == pytest.approx(25.0)
    sketch.add(5.0, count=0)
    assert sketch.count == 100


def test_serialised_form_is_compact() -> None:
    sketch = LatencySketch.of(float(ms) for ms in range(1, 10_001))
    text = json.dumps(sketch.to_dict(), separators=(",", ":"))
    # ~930 buckets cover 1 ms..10 s at 1 %; 10 000 raw values would need ~50 kB
    assert len(text) < 8_000


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "12"])
def test_bad_latency_is_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        LatencySketch().add(bad)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="count"):
        LatencySketch().add(1.0, count=-2)
    with pytest.raises(InvalidArgument, match="quantile"):
        LatencySketch().quantile(1.5)
    with pytest.raises(InvalidArgument, match="relative_accuracy"):
        LatencySketch(relative_accuracy=0)
    with pytest.raises(InvalidArgument, match="different accuracy"):
        LatencySketch(0.01).merge(LatencySketch(0.02))


@pytest.mark.parametrize(
    "data",
    [
        {"a": 0.01, "k": [1, 2], "c": [1]},
        {"a": 0.01, "k": ["x"], "c": [1]},
        {"a": 0.01, "k": [1], "c": [0]},
        {"a": "fine", "k": [], "c": []},
        {"a": 0.01, "k": [5], "c": [1], "s": 1.0, "lo": None, "hi": 2.0},
        {"a": 0.01, "k": [], "c": [], "z": -1},
        {"a": 0.01, "k": [], "c": [], "z": True},
    ],
)
def test_malformed_dicts_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        LatencySketch.from_dict(data)


def test_sketches_are_not_hashable_but_compare() -> None:
    assert LatencySketch.of([1.0]) == LatencySketch.of([1.0])
    assert LatencySketch.of([1.0]) != LatencySketch.of([2.0])
    assert LatencySketch() != "sketch"
    with pytest.raises(TypeError):
        hash(LatencySketch())
    assert "count=1" in repr(LatencySketch.of([3.0]))
