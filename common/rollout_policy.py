"""Judging a rollout step from metrics: success criteria, metric windows and verdicts.

Pure: an agent builds a ``Window`` per (unit, version) from its request log, the
coordinator merges the windows of all hosts and calls ``evaluate`` (or ``compare`` for a
canary against the stable version in the same period). Plans live in ``canary`` and
``bluegreen``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from common.errors import InvalidArgument
from common.input_bounds import MAX_LATENCY_MS, quoted
from common.latency import LatencySketch

__all__ = [
    "ComparisonCriteria",
    "Outcome",
    "SuccessCriteria",
    "Verdict",
    "Window",
    "compare",
    "evaluate",
]


_MAX_RATE = 1e9
"""Requests (per second, or counted) a criterion may ask for."""


def _check(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (low <= value <= high):
        raise InvalidArgument(
            f"{name} must be a number >= {low:g} and <= {high:g}, got {quoted(value)}",
            field=name
        )


@dataclass(frozen=True)
class SuccessCriteria:
    """What a step must show to pass. Rates are fractions (0.01 = 1 %)."""

    max_error_rate: float = 0.01
    """Highest share of failed requests (5xx or connection errors)."""
    max_latency_p95_ms: float = 500.0
    """Highest 95th-percentile latency in milliseconds."""
    min_throughput_rps: float = 0.0
    """Lowest requests per second the new version must serve (0: not checked)."""
    min_requests: int = 100
    """Fewer requests than this make the step inconclusive, never pass or fail."""

    def __post_init__(self) -> None:
        _check("max_error_rate", self.max_error_rate, 0.0, 1.0)
        _check("max_latency_p95_ms", self.max_latency_p95_ms, 0.0, MAX_LATENCY_MS)
        _check("min_throughput_rps", self.min_throughput_rps, 0.0, _MAX_RATE)
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int):
            raise InvalidArgument("min_requests must be a whole number", field="min_requests")
        _check("min_requests", self.min_requests, 1, _MAX_RATE)


@dataclass(frozen=True)
class Window:
    """Requests of one version over one period: counts, errors, latency and duration.

    Windows from different hosts over the same period merge into one: counts add, the
    sketches merge and the duration is the longer of the two (hosts measure the same
    period in parallel, so throughput is total requests over that period).

    Counts are exact; latency is measured on sampled requests, one in ``sample_every``
    (``latency.count`` of them), a ratio the hosts' HAProxy log sampling sets.
    """

    requests: int = 0
    errors: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)
    duration_s: float = 0.0
    sample_every: int = 1

    def __post_init__(self) -> None:
        for name in ("requests", "errors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"window {name} must be a whole number >= 0", field=name)
        if self.errors > self.requests:
            raise InvalidArgument(
                f"window has more errors ({self.errors}) than requests ({self.requests})"
            )
        _check("duration_s", self.duration_s, 0.0, math.inf)
        if isinstance(self.sample_every, bool) or not isinstance(self.sample_every, int) \
                or self.sample_every < 1:
            raise InvalidArgument("window sample_every must be a whole number >= 1",
                                  field="sample_every")

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def throughput_rps(self) -> float | None:
        return self.requests / self.duration_s if self.duration_s > 0 else None

    @property
    def p95_ms(self) -> float | None:
        return self.latency.quantile(0.95)

    def merge(self, other: Window) -> Window:
        """This window and ``other`` (same period, another host) as one new window."""
        sketch = self.latency.copy()
        sketch.merge(other.latency)
        return Window(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=sketch,
            duration_s=max(self.duration_s, other.duration_s),
            sample_every=max(self.sample_every, other.sample_every),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": self.latency.to_dict(),
            "duration_s": self.duration_s,
            "sample_every": self.sample_every,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Window:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a window must be a JSON object, got {quoted(data)}")
        latency = data.get("latency", {})
        if not isinstance(latency, Mapping):
            raise InvalidArgument("window latency must be a sketch object", field="latency")
        return cls(
            requests=data.get("requests", 0),  # type: ignore[arg-type]  # validated
            errors=data.get("errors", 0),  # type: ignore[arg-type]
            latency=LatencySketch.from_dict(latency),
            duration_s=data.get("duration_s", 0.0),  # type: ignore[arg-type]
            sample_every=data.get("sample_every", 1),  # type: ignore[arg-type]
        )


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """The judgement of a window, with every reason in words and numbers."""

    outcome: Outcome
    reasons: tuple[str, ...]
    metrics: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    def summary(self) -> str:
        return f"{self.outcome.value}: " + "; ".join(self.reasons)


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def evaluate(window: Window, criteria: SuccessCriteria) -> Verdict:
    """Pass, fail or inconclusive (too few requests) for ``window`` under ``criteria``."""
    metrics = {
        "requests": float(window.requests),
        "error_rate": window.error_rate,
        "latency_p95_ms": window.p95_ms,
        "throughput_rps": window.throughput_rps,
    }
    if window.requests < criteria.min_requests:
        return Verdict(
            Outcome.INCONCLUSIVE,
            (f"only {window.requests} requests < minimum {criteria.min_requests}",),
            metrics,
        )
    checks: list[tuple[bool, str]] = []
    rate = window.errors / window.requests
    bad = rate > criteria.max_error_rate
    checks.append(
        (
            bad,
            f"error rate {_pct(rate)} {'>' if bad else '<='} max "
            f"{_pct(criteria.max_error_rate)} over {window.requests} requests",
        )
    )
    p95 = window.p95_ms
    if p95 is not None:
        bad = p95 > criteria.max_latency_p95_ms
        checks.append(
            (
                bad,
                f"latency p95 {p95:.1f} ms {'>' if bad else '<='} max "
                f"{criteria.max_latency_p95_ms:.1f} ms",
            )
        )
    if criteria.min_throughput_rps > 0:
        rps = window.throughput_rps or 0.0
        bad = rps < criteria.min_throughput_rps
        checks.append(
            (
                bad,
                f"throughput {rps:.1f} rps {'<' if bad else '>='} min "
                f"{criteria.min_throughput_rps:.1f} rps over {window.duration_s:g} s",
            )
        )
    return _verdict(checks, metrics)


def _verdict(checks: list[tuple[bool, str]], metrics: Mapping[str, float | None]) -> Verdict:
    failed = tuple(text for bad, text in checks if bad)
    if failed:
        return Verdict(Outcome.FAIL, failed, metrics)
    return Verdict(Outcome.PASS, tuple(text for _, text in checks), metrics)


@dataclass(frozen=True)
class ComparisonCriteria:
    """How much worse than the stable version the canary may be in the same period."""

    max_error_rate_increase: float = 0.01
    """Canary error rate minus stable error rate, as a fraction (0.01 = 1 point)."""
    max_latency_p95_ratio: float = 1.5
    """Canary p95 over stable p95."""
    min_latency_p95_increase_ms: float = 50.0
    """A latency regression also needs the canary's p95 this many ms above the stable one,
    so scheduling noise on fast services (a few ms either way) never fails a canary."""
    min_requests: int = 100
    """Each side needs this many requests, or the comparison is inconclusive."""

    def __post_init__(self) -> None:
        _check("max_error_rate_increase", self.max_error_rate_increase, 0.0, 1.0)
        _check("max_latency_p95_ratio", self.max_latency_p95_ratio, 1.0, 1000.0)
        _check("min_latency_p95_increase_ms", self.min_latency_p95_increase_ms, 0.0,
               MAX_LATENCY_MS)
        _check("min_requests", self.min_requests, 1, _MAX_RATE)


def compare(canary: Window, stable: Window, criteria: ComparisonCriteria) -> Verdict:
    """Judge ``canary`` relative to ``stable`` measured over the same period."""
    metrics: dict[str, float | None] = {
        "canary_error_rate": canary.error_rate,
        "stable_error_rate": stable.error_rate,
        "canary_latency_p95_ms": canary.p95_ms,
        "stable_latency_p95_ms": stable.p95_ms,
    }
    short = [
        f"only {w.requests} {name} requests < minimum {criteria.min_requests}"
        for name, w in (("canary", canary), ("stable", stable))
        if w.requests < criteria.min_requests
    ]
    if short:
        return Verdict(Outcome.INCONCLUSIVE, tuple(short), metrics)
    checks: list[tuple[bool, str]] = []
    c_rate, s_rate = canary.errors / canary.requests, stable.errors / stable.requests
    bad = c_rate - s_rate > criteria.max_error_rate_increase
    checks.append(
        (
            bad,
            f"canary error rate {_pct(c_rate)} vs stable {_pct(s_rate)}: increase "
            f"{(c_rate - s_rate) * 100:.1f} points {'>' if bad else '<='} max "
            f"{criteria.max_error_rate_increase * 100:.1f}",
        )
    )
    c_p95, s_p95 = canary.p95_ms, stable.p95_ms
    if c_p95 is not None and s_p95 is not None and s_p95 > 0:
        ratio = c_p95 / s_p95
        bad = (ratio > criteria.max_latency_p95_ratio
               and c_p95 - s_p95 > criteria.min_latency_p95_increase_ms)
        checks.append(
            (
                bad,
                f"canary latency p95 {c_p95:.1f} ms vs stable {s_p95:.1f} ms: "
                f"ratio {ratio:.2f} {'>' if bad else 'within'} max "
                f"{criteria.max_latency_p95_ratio:.2f} (a regression also needs more than "
                f"+{criteria.min_latency_p95_increase_ms:g} ms; "
                f"here {c_p95 - s_p95:+.1f} ms)",
            )
        )
    return _verdict(checks, metrics)
