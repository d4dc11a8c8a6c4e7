"""The CPU throttling rule: a cpu ``limit_exceeded`` only for sustained throttling near
the limit, once per episode (agent/limits/cpu_throttle.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.instances.events import EventType
from agent.instances.resource_monitor import cpu_finding
from agent.limits.cgroups import CgroupPaths, read_sample
from agent.limits.cpu_throttle import CpuInterval, ThrottleEpisodes, ThrottleRule, cpu_interval

RULE = ThrottleRule(samples=3, throttled_ratio=0.5, usage_ratio=0.8)
HOT = CpuInterval(periods=50, throttled=45, cores=0.5, limit=0.5)
COOL = CpuInterval(periods=50, throttled=0, cores=0.1, limit=0.5)
# the demo's noise: throttled in many periods by bursts, but far below the limit on average
BURSTY = CpuInterval(periods=20, throttled=15, cores=0.05, limit=0.5)
FIXTURES = Path(__file__).parent / "fixtures" / "cgroup_v1"


def run(intervals: list[CpuInterval | None], rule: ThrottleRule = RULE) -> list[int]:
    episodes = ThrottleEpisodes(rule)
    return [i for i, interval in enumerate(intervals) if episodes.observe(interval)]


def test_hot_needs_both_throttling_and_usage_near_the_limit() -> None:
    assert HOT.hot(RULE)
    assert not COOL.hot(RULE) and not BURSTY.hot(RULE)
    assert not replace(HOT, throttled=20).hot(RULE)  # 40 % of periods
    assert not replace(HOT, cores=0.39).hot(RULE)
    assert not replace(HOT, periods=0, throttled=0).hot(RULE)


def test_fires_on_the_nth_hot_sample_and_again_only_after_it_clears() -> None:
    assert run([HOT, HOT, HOT, HOT, HOT]) == [2]
    # one quiet sample inside a busy stretch is the same episode
    assert run([HOT, HOT, HOT, COOL, HOT, HOT, HOT]) == [2]
    # three quiet samples end it; the next sustained stretch is a new episode
    assert run([HOT, HOT, HOT, COOL, COOL, None, HOT, HOT, HOT]) == [2, 8]


def test_under_the_limit_never_fires_however_long() -> None:
    assert run([BURSTY] * 100) == []


def test_rule_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ThrottleRule(samples=0)
    with pytest.raises(ValueError):
        ThrottleRule(throttled_ratio=1.5)


rules = st.builds(ThrottleRule, samples=st.integers(1, 6))
coolish = st.sampled_from([COOL, BURSTY, None])


@given(rules, st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), max_size=12))
def test_short_bursts_never_fire(rule: ThrottleRule, runs: list[tuple[int, int]]) -> None:
    """Hot stretches shorter than the window, whatever the gaps, raise nothing."""
    intervals: list[CpuInterval | None] = []
    for hot, cool in runs:
        intervals += [HOT] * min(hot, rule.samples - 1) + [COOL] * cool
    assert run(intervals, rule) == []


@given(rules, st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), coolish),
                       min_size=1, max_size=8))
def test_sustained_throttle_fires_once_per_episode(
        rule: ThrottleRule, episodes: list[tuple[int, int, CpuInterval | None]]) -> None:
    """Episodes: a sustained hot stretch, then enough quiet samples to end it."""
    intervals: list[CpuInterval | None] = []
    expected: list[int] = []
    for extra_hot, extra_cool, quiet in episodes:
        expected.append(len(intervals) + rule.samples - 1)
        intervals += [HOT] * (rule.samples + extra_hot) + [quiet] * (rule.samples + extra_cool)
    assert run(intervals, rule) == expected


def test_interval_from_samples_and_the_monitor_finding() -> None:
    base = replace(read_sample(CgroupPaths(1, {c: FIXTURES for c in ("cpu", "cpuacct")})),
                   cpu_limit=0.5, cpu_periods=100, cpu_throttled=10, cpu_usage_ns=10**9)
    samples = [replace(base, cpu_periods=100 + 20 * n, cpu_throttled=10 + 19 * n,
                       cpu_usage_ns=10**9 + n * 10**9 // 2) for n in range(6)]
    first = cpu_interval(samples[0], samples[1], 2.0)
    assert first == CpuInterval(periods=20, throttled=19, cores=0.25, limit=0.5)
    assert cpu_interval(samples[1], samples[0], 1.0) is None  # counters reset: new cgroup
    assert cpu_interval(samples[0], replace(samples[1], cpu_limit=None), 1.0) is None
    episodes = ThrottleEpisodes(RULE)
    found = [cpu_finding(episodes, prev, cur, 1.0)
             for prev, cur in zip([None, *samples], samples, strict=False)]
    fired = [(i, f) for i, f in enumerate(found) if f is not None]
    assert len(fired) == 1 and fired[0][0] == 3  # the third interval (first sample has none)
    finding = fired[0][1]
    assert (finding.event, finding.resource) == (EventType.LIMIT_EXCEEDED, "cpu")
    assert (finding.usage, finding.limit) == (0.5, 0.5)
