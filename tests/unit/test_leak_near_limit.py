"""The fast-leak path: usage above a high-water mark and a trend that reaches the limit soon."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.recovery import assess_near_limit

MIB = 1 << 20
limits = st.integers(32 * MIB, 4096 * MIB)
periods = st.floats(0.5, 30.0)
horizons = st.integers(2, 12)
windows = st.integers(3, 8)
marks = st.floats(0.5, 0.95)


@given(limits, periods, horizons, windows, marks, st.floats(0.0, 0.99), st.data())
def test_monotone_growth_that_reaches_the_limit_within_the_horizon_triggers(
    limit: int, dt: float, k: int, n: int, mark: float, where: float, data: st.DataObject
) -> None:
    # each step grows by g/2 to 2g, so the fitted slope is at least g/2 per period (the
    # least-squares slope is a weighted mean of the pairwise slopes)
    g = data.draw(st.integers(2, limit // (4 * n)))
    steps = data.draw(st.lists(st.integers(g // 2, 2 * g), min_size=n - 1, max_size=n - 1))
    newest = limit - int(where * min(k * (g // 2), limit - mark * limit))
    values = [newest]
    for step in reversed(steps):
        values.insert(0, values[0] - step)
    samples = [(i * dt, v) for i, v in enumerate(values)]
    got = assess_near_limit(samples, limit, horizon_s=k * dt, high_water=mark, min_samples=n)
    assert got.leaking, got.reason
    assert got.projected_s is not None and got.projected_s <= k * dt


@given(limits, periods, horizons, windows, st.floats(0.0, 1.0), st.data())
def test_steady_growth_that_stays_clear_of_the_limit_within_the_horizon_does_not(
    limit: int, dt: float, k: int, n: int, where: float, data: st.DataObject
) -> None:
    g = data.draw(st.integers(1, limit // (4 * (k + n))))
    newest = int(limit - k * g * (1.01 + where))  # the limit is more than k periods away
    samples = [(i * dt, newest - (n - 1 - i) * g) for i in range(n)]
    got = assess_near_limit(samples, limit, horizon_s=k * dt, high_water=0.0, min_samples=n)
    assert not got.leaking, got.reason


@given(limits, periods, horizons, windows, marks, st.data())
def test_flat_or_falling_usage_above_the_mark_never_triggers(
    limit: int, dt: float, k: int, n: int, mark: float, data: st.DataObject
) -> None:
    top = data.draw(st.integers(int(mark * limit) + 1, limit))
    drops = data.draw(st.lists(st.integers(0, MIB), min_size=n - 1, max_size=n - 1))
    values = [top]
    for drop in drops:
        values.append(max(int(mark * limit) + 1, values[-1] - drop))
    samples = [(i * dt, v) for i, v in enumerate(values)]
    got = assess_near_limit(samples, limit, horizon_s=k * dt, high_water=mark, min_samples=n)
    assert not got.leaking, got.reason


@given(limits, periods, horizons, windows, marks, st.floats(0.0, 1.0), st.data())
def test_noise_around_a_level_never_triggers(
    limit: int, dt: float, k: int, n: int, mark: float, where: float, data: st.DataObject
) -> None:
    level = int(mark * limit + where * (limit - mark * limit) * 0.9)
    # the fitted slope is at most 2a per period, so the trend reaches at most
    # level + a + 2ak: keep that under the limit
    a = int((limit - level) / (1 + 2 * k) * 0.99)
    noise = data.draw(st.lists(st.integers(-a, a), min_size=n, max_size=n))
    samples = [(i * dt, level + e) for i, e in enumerate(noise)]
    got = assess_near_limit(samples, limit, horizon_s=k * dt, high_water=mark, min_samples=n)
    assert not got.leaking, got.reason


@given(limits, periods, windows, marks)
def test_below_the_mark_even_a_steep_rise_does_not_trigger(
    limit: int, dt: float, n: int, mark: float
) -> None:
    top = int(mark * limit) - 1
    samples = [(i * dt, top - (n - 1 - i) * (limit // 50)) for i in range(n)]
    got = assess_near_limit(samples, limit, horizon_s=1e9, high_water=mark, min_samples=n)
    assert not got.leaking


def test_the_120_mb_a_minute_leak_under_256_mib_is_caught_at_the_mark() -> None:
    # 2 MiB/s, sampled every 5 s: at 87 % of 256 MiB the limit is 17 s away
    limit = 256 * MIB
    samples = [(t * 5.0, int(0.87 * limit) - (4 - t) * 10 * MIB) for t in range(5)]
    got = assess_near_limit(samples, limit, horizon_s=30.0)
    assert got.leaking and got.projected_s == pytest.approx(0.13 * limit / (2 * MIB), rel=0.01)
    assert "87% of the limit" in got.reason and "projected in 17 s" in got.reason


def test_too_few_samples_or_no_limit_is_no_judgement() -> None:
    rising = [(float(t), (200 + 10 * t) * MIB) for t in range(5)]
    assert not assess_near_limit(rising[:2], 256 * MIB, horizon_s=60.0, min_samples=4).leaking
    assert not assess_near_limit(rising, 0, horizon_s=60.0).leaking
    # one step of four flat (a sample between two allocations) still counts as rising
    chunky = [*rising[:2], (2.0, rising[1][1]), *rising[3:]]
    assert assess_near_limit(chunky, 256 * MIB, horizon_s=60.0, min_samples=5,
                             min_rising_fraction=0.7).leaking is True
