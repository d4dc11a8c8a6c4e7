"""Success criteria, windows and verdicts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.latency import LatencySketch
from common.rollout_policy import (
    ComparisonCriteria,
    Outcome,
    SuccessCriteria,
    Window,
    compare,
    evaluate,
)

CRITERIA = SuccessCriteria(max_error_rate=0.01, max_latency_p95_ms=500, min_requests=100)


def window(requests: int, errors: int = 0, ms: float = 50.0, duration_s: float = 60.0) -> Window:
    sketch = LatencySketch()
    sketch.add(ms, count=requests)
    return Window(requests=requests, errors=errors, latency=sketch, duration_s=duration_s)


def test_failing_error_rate_is_reported_in_words_and_numbers() -> None:
    verdict = evaluate(window(412, errors=88), CRITERIA)
    assert verdict.outcome is Outcome.FAIL and not verdict.passed
    assert verdict.reasons == ("error rate 21.4% > max 1.0% over 412 requests",)
    assert verdict.metrics["error_rate"] == pytest.approx(88 / 412)
    assert verdict.summary().startswith("fail: error rate 21.4%")


def test_every_failing_criterion_is_named() -> None:
    criteria = SuccessCriteria(
        max_error_rate=0.05, max_latency_p95_ms=200, min_throughput_rps=10, min_requests=50
    )
    verdict = evaluate(window(120, errors=30, ms=800.0, duration_s=60), criteria)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons[0] == "error rate 25.0% > max 5.0% over 120 requests"
    assert verdict.reasons[1].startswith("latency p95 8") and "> max 200.0 ms" in verdict.reasons[1]
    assert verdict.reasons[2] == "throughput 2.0 rps < min 10.0 rps over 60 s"


def test_pass_lists_each_check() -> None:
    verdict = evaluate(window(1000, errors=5, ms=100.0), CRITERIA)
    assert verdict.outcome is Outcome.PASS
    assert verdict.reasons[0] == "error rate 0.5% <= max 1.0% over 1000 requests"
    assert "<= max 500.0 ms" in verdict.reasons[1]


def test_too_few_requests_is_inconclusive_even_if_all_failed() -> None:
    verdict = evaluate(window(12, errors=12), CRITERIA)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reasons == ("only 12 requests < minimum 100",)
    assert evaluate(Window(), CRITERIA).outcome is Outcome.INCONCLUSIVE


def test_error_rate_exactly_at_the_maximum_passes() -> None:
    assert evaluate(window(100, errors=1), CRITERIA).outcome is Outcome.PASS
    assert evaluate(window(100, errors=2), CRITERIA).outcome is Outcome.FAIL


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.data())
def test_outcome_follows_the_criteria(requests: int, data: st.DataObject) -> None:
    errors = data.draw(st.integers(0, requests))
    ms = data.draw(st.floats(0, 2000))
    verdict = evaluate(window(requests, errors, ms), CRITERIA)
    if requests < CRITERIA.min_requests:
        assert verdict.outcome is Outcome.INCONCLUSIVE
    elif errors / requests > CRITERIA.max_error_rate or ms > CRITERIA.max_latency_p95_ms * 1.01:
        assert verdict.outcome is Outcome.FAIL
    elif ms < CRITERIA.max_latency_p95_ms * 0.99:
        assert verdict.outcome is Outcome.PASS


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 500), st.floats(1, 900)),
        min_size=1,
        max_size=5,
    )
)
def test_windows_merge_across_hosts(hosts: list[tuple[int, int, float]]) -> None:
    windows = [window(r + e, e, ms) for r, e, ms in hosts]
    merged = windows[0]
    for other in windows[1:]:
        merged = merged.merge(other)
    assert merged.requests == sum(r + e for r, e, _ in hosts)
    assert merged.errors == sum(e for _, e, _ in hosts)
    assert merged.latency.count == merged.requests
    assert merged.duration_s == 60.0
    assert windows[0].latency.count == hosts[0][0] + hosts[0][1]  # inputs untouched


def test_window_round_trip_and_rates() -> None:
    w = window(300, errors=3, ms=20.0, duration_s=30)
    again = Window.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again == w
    assert w.error_rate == 0.01 and w.throughput_rps == 10.0
    assert Window().error_rate is None and Window().throughput_rps is None
    sampled = Window(requests=1000, latency=LatencySketch.of([5.0] * 20), sample_every=50)
    assert Window.from_dict(json.loads(json.dumps(sampled.to_dict()))) == sampled
    assert sampled.merge(w).sample_every == 50  # the coarser ratio of the two


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": 1, "errors": 2}, "more errors"),
        ({"sample_every": 0}, "sample_every"),
        ({"duration_s": -5.0}, "duration_s"),
        ({"requests": 1.5}, "requests"),
    ],
)
def test_bad_windows(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Window(**kwargs)  # type: ignore[arg-type]


def test_bad_window_dicts() -> None:
    with pytest.raises(InvalidArgument, match="latency"):
        Window.from_dict({"latency": []})
    with pytest.raises(InvalidArgument, match="errors"):
        Window.from_dict({"requests": 1, "errors": "x"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"max_latency_p95_ms": -1}, "max_latency_p95_ms"),
        ({"min_throughput_rps": float("nan")}, "min_throughput_rps"),
        ({"min_requests": 0}, "min_requests"),
        ({"min_requests": 2.5}, "min_requests"),
    ],
)
def test_bad_criteria(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        SuccessCriteria(**kwargs)  # type: ignore[arg-type]


def test_compare_canary_with_stable() -> None:
    criteria = ComparisonCriteria()
    good = compare(window(500, 5, ms=110), window(5000, 40, ms=100), criteria)
    assert good.outcome is Outcome.PASS
    bad = compare(window(500, 50, ms=400), window(5000, 40, ms=100), criteria)
    assert bad.outcome is Outcome.FAIL
    assert bad.reasons[0].startswith("canary error rate 10.0% vs stable 0.8%: increase 9.2 points")
    assert "ratio 4.0" in bad.reasons[1]
    few = compare(window(10), window(5000), criteria)
    assert few.outcome is Outcome.INCONCLUSIVE
    assert few.reasons == ("only 10 canary requests < minimum 100",)
    with pytest.raises(InvalidArgument, match="max_latency_p95_ratio"):
        ComparisonCriteria(max_latency_p95_ratio=0.5)


def test_latency_regression_needs_both_ratio_and_absolute_increase() -> None:
    criteria = ComparisonCriteria(min_latency_p95_increase_ms=50.0)
    # Twice as slow but only +6 ms: scheduling noise on a fast service, not a regression.
    noise = compare(window(500, ms=12), window(5000, ms=6), criteria)
    assert noise.outcome is Outcome.PASS
    assert "within max 1.50" in noise.reasons[-1]
    # Twice as slow and +120 ms: a regression.
    slow = compare(window(500, ms=240), window(5000, ms=120), criteria)
    assert slow.outcome is Outcome.FAIL
    assert "ratio 2.0" in slow.reasons[-1] and "+120" in slow.reasons[-1]
    # +120 ms but within the ratio: fine.
    within = compare(window(500, ms=600), window(5000, ms=480), criteria)
    assert within.outcome is Outcome.PASS
    with pytest.raises(InvalidArgument, match="min_latency_p95_increase_ms"):
        ComparisonCriteria(min_latency_p95_increase_ms=-1)
