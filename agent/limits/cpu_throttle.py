"""When CPU throttling is worth a ``limit_exceeded`` event: sustained, near the limit.

The CFS quota throttles a container in every period in which it asks for more than its
share, so a bursty service well under its limit on average (a request that fans out to
four threads, a start-up) shows throttled periods all the time. Those are not a limit
being exceeded. The rule here counts a sample interval as *hot* only when

- the container was throttled in at least ``throttled_ratio`` of the CFS periods in which
  it ran (``nr_throttled`` / ``nr_periods`` between two samples), and
- it used at least ``usage_ratio`` of its limit on average over the interval,

and raises one event when ``samples`` consecutive intervals are hot. The episode then
lasts until ``samples`` consecutive intervals are not hot (one quiet sample inside a busy
stretch does not start a new episode); after that the rule is armed again.

Pure: numbers in, a decision out; the resource monitor keeps one ``ThrottleEpisodes``
per instance and feeds it each sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.limits.cgroups import CgroupSample

__all__ = ["CpuInterval", "ThrottleEpisodes", "ThrottleRule", "cpu_interval"]


@dataclass(frozen=True)
class ThrottleRule:
    """The thresholds (agent settings ``cpu_throttle_*``)."""

    samples: int = 3
    """Consecutive hot sample intervals that make an episode (and cool ones that end it)."""
    throttled_ratio: float = 0.5
    """Share of the CFS periods with work in which the container was throttled."""
    usage_ratio: float = 0.8
    """Average cores used over the interval / the CPU limit."""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError("samples must be at least 1")
        if not (0 < self.throttled_ratio <= 1 and 0 < self.usage_ratio <= 1):
            raise ValueError("ratios must be in (0, 1]")


@dataclass(frozen=True)
class CpuInterval:
    """CPU figures between two samples."""

    periods: int
    """CFS periods in which the container had work."""
    throttled: int
    """Of those, periods in which it was throttled."""
    cores: float
    """Average cores used."""
    limit: float
    """The CPU limit in cores."""

    def hot(self, rule: ThrottleRule) -> bool:
        return (self.periods > 0 and self.limit > 0
                and self.throttled >= rule.throttled_ratio * self.periods
                and self.cores >= rule.usage_ratio * self.limit)


def cpu_interval(prev: CgroupSample, cur: CgroupSample, seconds: float) -> CpuInterval | None:
    """The interval between two samples; None without a CPU limit or a positive span
    (or when counters went backwards: a new cgroup behind the same instance)."""
    if not cur.cpu_limit or seconds <= 0:
        return None
    periods = cur.cpu_periods - prev.cpu_periods
    throttled = cur.cpu_throttled - prev.cpu_throttled
    used = cur.cpu_usage_ns - prev.cpu_usage_ns
    if periods < 0 or throttled < 0 or used < 0:
        return None
    return CpuInterval(periods, throttled, used / 1e9 / seconds, cur.cpu_limit)


@dataclass
class ThrottleEpisodes:
    """One instance's throttling episodes: ``observe`` is True once per episode."""

    rule: ThrottleRule
    hot_streak: int = 0
    cool_streak: int = 0
    in_episode: bool = False

    def observe(self, interval: CpuInterval | None) -> bool:
        """Feed one interval (None: nothing measurable, counts as not hot); True when
        this interval starts an episode."""
        if interval is not None and interval.hot(self.rule):
            self.hot_streak += 1
            self.cool_streak = 0
        else:
            self.cool_streak += 1
            self.hot_streak = 0
            if self.cool_streak >= self.rule.samples:
                self.in_episode = False
        if not self.in_episode and self.hot_streak >= self.rule.samples:
            self.in_episode = True
            return True
        return False
