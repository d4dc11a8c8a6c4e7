"""Recovery policy: when to retry a failed instance, how long to wait, when to escalate.

Pure functions of (policy, state, event, now). One *incident* is one detected failure (a
crash or a memory leak); it gets a first recovery try plus ``max_retries`` retries, retry
``k`` waiting ``delay_s * k`` (crash: 3 retries at 5, 10, 15 s; leak: 1 retry, no wait).
When the last try fails the failure is escalated to the coordinator.

Crash-loop protection: incidents are counted until the instance has stayed healthy for
``healthy_reset_s``. From the second incident on, the first try waits
``loop_backoff_s * 2 ** (incidents - 2)``, capped at ``loop_backoff_cap_s``; an instance
with more than ``max_incidents`` incidents without a healthy stretch is escalated.

Leaks are judged two ways: a slow leak by a sustained rise over a long window
(``assess_memory_trend``), a fast one by usage above a high-water mark of the limit with a
short-term trend that reaches the limit within a few sampling periods
(``assess_near_limit``), so it is dumped and restarted before the kernel OOM-kills it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise

from common.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "FailureKind",
    "LeakAssessment",
    "RecoveryAction",
    "RecoveryDecision",
    "RecoveryPolicy",
    "RecoveryState",
    "RetryRule",
    "assess_memory_trend",
    "assess_near_limit",
    "decide_after_crash",
    "decide_after_failed_attempt",
    "decide_after_failure",
    "detect_memory_leak",
    "record_healthy",
]


class FailureKind(StrEnum):
    CONTAINER_CRASH = "container_crash"
    MEMORY_LEAK = "memory_leak"


@dataclass(frozen=True)
class RetryRule:
    """Retries for one kind of failure."""

    max_retries: int
    """Retries after the first try of an incident."""
    delay_s: float
    """Retry ``k`` waits ``delay_s * k`` seconds."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or (self.max_retries < 0)
        ):
            raise InvalidArgument(f"max_retries must be >= 0, got {self.max_retries!r}")
        _seconds("delay_s", self.delay_s)


def _seconds(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise InvalidArgument(f"{name} must be seconds >= 0, got {value!r}", field=name)


@dataclass(frozen=True)
class RecoveryPolicy:
    """How an agent recovers failed instances (see the module docstring)."""

    crash: RetryRule = field(default_factory=lambda: RetryRule(max_retries=3, delay_s=5.0))
    leak: RetryRule = field(default_factory=lambda: RetryRule(max_retries=1, delay_s=0.0))
    loop_backoff_s: float = 10.0
    """First-try wait of the second incident before a healthy stretch; doubles after."""
    loop_backoff_cap_s: float = 300.0
    """Longest crash-loop wait."""
    healthy_reset_s: float = 600.0
    """Healthy this long, the incident count goes back to zero."""
    max_incidents: int = 5
    """More incidents than this without a healthy stretch are escalated."""

    def __post_init__(self) -> None:
        for name in ("loop_backoff_s", "loop_backoff_cap_s", "healthy_reset_s"):
            _seconds(name, getattr(self, name))
        if (
            isinstance(self.max_incidents, bool)
            or not isinstance(self.max_incidents, int)
            or (self.max_incidents < 1)
        ):
            raise InvalidArgument(f"max_incidents must be >= 1, got {self.max_incidents!r}")

    def rule(self, kind: FailureKind) -> RetryRule:
        return self.crash if kind is FailureKind.CONTAINER_CRASH else self.leak


@dataclass(frozen=True)
class RecoveryState:
    """What the agent remembers about one instance's failures."""

    kind: FailureKind | None = None
    """Kind of the open incident (None: no incident open)."""
    failed_tries: int = 0
    """Recovery tries of the open incident that failed."""
    incidents: int = 0
    """Incidents since the instance was last healthy for ``healthy_reset_s``."""
    healthy_since: float | None = None
    escalated: bool = False
    """The open incident was handed to the coordinator; no more local tries."""


class RecoveryAction(StrEnum):
    RETRY = "retry"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class RecoveryDecision:
    action: RecoveryAction
    delay_s: float
    """Wait this long before the try (0 for escalation)."""
    attempt: int
    """1 for an incident's first try, 2 for its first retry, and so on."""
    reason: str
    state: RecoveryState


def record_healthy(policy: RecoveryPolicy, state: RecoveryState, now: float) -> RecoveryState:
    """The instance is healthy at ``now``: close the incident, maybe forget old incidents."""
    since = state.healthy_since if state.healthy_since is not None else now
    incidents = 0 if now - since >= policy.healthy_reset_s else state.incidents
    return RecoveryState(kind=None, failed_tries=0, incidents=incidents, healthy_since=since)


def decide_after_failure(
    policy: RecoveryPolicy, state: RecoveryState, kind: FailureKind, now: float
) -> RecoveryDecision:
    """A new incident (``kind``) was detected at ``now``: retry (after how long) or escalate."""
    if state.healthy_since is not None and now - state.healthy_since >= policy.healthy_reset_s:
        state = replace(state, incidents=0)
    incidents = state.incidents + 1
    opened = RecoveryState(kind=kind, failed_tries=0, incidents=incidents, healthy_since=None)
    if incidents > policy.max_incidents:
        opened = replace(opened, escalated=True)
        return RecoveryDecision(
            RecoveryAction.ESCALATE,
            0.0,
            1,
            f"{kind.value}: crash loop, {incidents} incidents without "
            f"{policy.healthy_reset_s:g} s of health (max {policy.max_incidents})",
            opened,
        )
    delay = 0.0
    if incidents >= 2:
        delay = min(policy.loop_backoff_cap_s, policy.loop_backoff_s * 2.0 ** (incidents - 2))
    reason = f"{kind.value}: try 1 of {policy.rule(kind).max_retries + 1}"
    if delay:
        reason += f" after {delay:g} s crash-loop backoff (incident {incidents})"
    return RecoveryDecision(RecoveryAction.RETRY, delay, 1, reason, opened)


def decide_after_crash(
    policy: RecoveryPolicy, state: RecoveryState, now: float
) -> RecoveryDecision:
    """``decide_after_failure`` for a container crash."""
    return decide_after_failure(policy, state, FailureKind.CONTAINER_CRASH, now)


def decide_after_failed_attempt(
    policy: RecoveryPolicy, state: RecoveryState, now: float
) -> RecoveryDecision:
    """The last recovery try of the open incident failed: retry later or escalate."""
    if state.kind is None:
        raise FailedPrecondition("no recovery incident is open for this instance")
    if state.escalated:
        raise FailedPrecondition(
            f"the {state.kind.value} incident was escalated; the coordinator decides now"
        )
    rule = policy.rule(state.kind)
    failed = state.failed_tries + 1
    after = replace(state, failed_tries=failed)
    if failed > rule.max_retries:
        return RecoveryDecision(
            RecoveryAction.ESCALATE,
            0.0,
            failed,
            f"{state.kind.value}: {failed} tries failed (max retries {rule.max_retries}); "
            "escalating to the coordinator",
            replace(after, escalated=True),
        )
    delay = rule.delay_s * failed
    if state.incidents >= 2:
        loop = policy.loop_backoff_s * 2.0 ** (state.incidents - 2)
        delay = max(delay, min(policy.loop_backoff_cap_s, loop))
    return RecoveryDecision(
        RecoveryAction.RETRY,
        delay,
        failed + 1,
        f"{state.kind.value}: retry {failed} of {rule.max_retries} after {delay:g} s",
        after,
    )


@dataclass(frozen=True)
class LeakAssessment:
    """A memory trend: the least-squares slope and how steadily memory rose."""

    leaking: bool
    slope_bytes_per_s: float
    rising_fraction: float
    span_s: float
    reason: str
    projected_s: float | None = None
    """Seconds until the fitted trend reaches the memory limit (the high-water path)."""


def assess_memory_trend(
    samples: Sequence[tuple[float, int]],
    min_span_s: float = 300.0,
    min_samples: int = 6,
    min_rising_fraction: float = 0.7,
    min_growth_fraction: float = 0.1,
) -> LeakAssessment:
    """Judge ``(timestamp, bytes)`` samples for a sustained rise, not a single spike.

    A leak needs: at least ``min_samples`` samples over at least ``min_span_s`` seconds, a
    positive least-squares slope whose fitted growth over the span is at least
    ``min_growth_fraction`` of the mean usage, and at least ``min_rising_fraction`` of
    the steps between consecutive samples going up (a flat step counts as not rising, so
    one spike in a flat line is no leak). Downsample very frequent samples first if memory
    grows in chunks.
    """
    points = _points(samples)
    span = points[-1][0] - points[0][0] if points else 0.0
    if len(points) < max(min_samples, 2) or span < min_span_s:
        return LeakAssessment(
            False,
            0.0,
            0.0,
            span,
            f"need {min_samples} samples over {min_span_s:g} s, have {len(points)} over {span:g} s",
        )
    slope = _slope(points)
    if slope is None:
        return LeakAssessment(False, 0.0, 0.0, span, "all samples share one timestamp")
    mean_b = sum(b for _, b in points) / len(points)
    rising = _rising_fraction(points)
    growth = slope * span
    leaking = (
        slope > 0 and rising >= min_rising_fraction and (growth >= min_growth_fraction * mean_b)
    )
    reason = (
        f"memory {'rising' if slope > 0 else 'not rising'} {slope:.1f} bytes/s "
        f"({growth / max(mean_b, 1.0) * 100:.1f}% of the mean over {span:g} s), "
        f"{rising * 100:.0f}% of steps up"
    )
    return LeakAssessment(leaking, slope, rising, span, reason)


def assess_near_limit(
    samples: Sequence[tuple[float, int]],
    limit: int,
    horizon_s: float,
    high_water: float = 0.85,
    min_samples: int = 4,
    min_rising_fraction: float = 0.7,
) -> LeakAssessment:
    """The plan's "usage high and trend increasing": a leak too fast for the long window.

    Judges the last ``min_samples`` ``(timestamp, bytes)`` samples against a memory
    ``limit``: a leak when the newest sample is at least ``high_water`` of the limit, the
    short window's least-squares slope is positive with at least ``min_rising_fraction`` of
    its steps going up, and that slope reaches the limit from the newest sample within
    ``horizon_s`` seconds. Flat or falling usage above the mark is no leak, and noise of
    amplitude ``a`` around a level ``L`` never is either while ``L + a`` plus
    ``2 a / (shortest step) * horizon_s`` stays under the limit (the least-squares slope is a
    weighted mean of pairwise slopes).
    """
    points = _points(samples)[-max(min_samples, 2):]
    if limit <= 0 or len(points) < max(min_samples, 2):
        return LeakAssessment(False, 0.0, 0.0, 0.0,
                              f"need {min_samples} samples and a memory limit")
    span = points[-1][0] - points[0][0]
    usage = points[-1][1]
    slope = _slope(points)
    rising = _rising_fraction(points)
    if usage < high_water * limit or slope is None or slope <= 0:
        return LeakAssessment(False, slope or 0.0, rising, span,
                              f"memory at {usage / limit * 100:.0f}% of the limit, "
                              f"{'rising' if slope and slope > 0 else 'not rising'}")
    projected = max(0.0, (limit - usage) / slope)
    leaking = rising >= min_rising_fraction and projected <= horizon_s
    reason = (
        f"memory at {usage / limit * 100:.0f}% of the limit (high-water mark "
        f"{high_water * 100:g}%), rising {slope:.0f} bytes/s over {span:.0f} s with "
        f"{rising * 100:.0f}% of steps up: limit projected in {projected:.0f} s "
        f"(horizon {horizon_s:g} s)"
    )
    return LeakAssessment(leaking, slope, rising, span, reason, projected)


def detect_memory_leak(
    samples: Sequence[tuple[float, int]],
    min_span_s: float = 300.0,
    min_samples: int = 6,
    min_rising_fraction: float = 0.7,
    min_growth_fraction: float = 0.1,
) -> bool:
    """Whether the samples show a leak; see ``assess_memory_trend``."""
    return assess_memory_trend(
        samples, min_span_s, min_samples, min_rising_fraction, min_growth_fraction
    ).leaking


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of sorted points (None when they share one timestamp)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_b = sum(b for _, b in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0:
        return None
    return sum((t - mean_t) * (b - mean_b) for t, b in points) / var_t


def _rising_fraction(points: Sequence[tuple[float, float]]) -> float:
    steps = [b2 - b1 for (_, b1), (_, b2) in pairwise(points)]
    return sum(1 for step in steps if step > 0) / len(steps) if steps else 0.0


def _points(samples: Sequence[tuple[float, int]]) -> list[tuple[float, float]]:
    if isinstance(samples, str) or not isinstance(samples, Sequence):
        raise InvalidArgument("memory samples must be a list of (timestamp, bytes) pairs")
    points: list[tuple[float, float]] = []
    for sample in samples:
        ok = (
            isinstance(sample, tuple | list)
            and len(sample) == 2
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in sample
            )
        )
        if not ok:
            raise InvalidArgument(
                f"memory sample {sample!r} must be (timestamp seconds, bytes)", field="samples"
            )
        points.append((float(sample[0]), float(sample[1])))
    return sorted(points)
