"""Blue-green plan: validate green, switch traffic (immediate | gradual | canary), clean up.

The old slot (blue) is removed ``cleanup_delay_s`` after the switch completes (30 s, as
Argo Rollouts' scaleDownDelaySeconds), so in-flight requests finish and a quick manual
rollback is still possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from common.canary import CanaryPlan, validate_steps
from common.errors import InvalidArgument
from common.input_bounds import MAX_LATENCY_MS, MAX_ROLLOUT_SECONDS, check_seconds, quoted
from common.rollout_policy import Outcome, Verdict

__all__ = ["BlueGreenPlan", "SwitchMode", "judge_green"]


class SwitchMode(StrEnum):
    IMMEDIATE = "immediate"
    GRADUAL = "gradual"
    CANARY = "canary"


@dataclass(frozen=True)
class BlueGreenPlan:
    """How a blue-green rollout validates green and moves traffic to it."""

    switch: SwitchMode = SwitchMode.IMMEDIATE
    cleanup_delay_s: float = 30.0
    """Seconds after the switch before blue is removed."""
    warmup_s: float = 5.0
    """Seconds green runs healthy before it is validated."""
    max_latency_p95_ms: float | None = None
    """Green's p95 in the performance check must not exceed this (None: not checked)."""
    gradual_steps: tuple[int, ...] = (25, 50, 75, 100)
    """Shares of traffic on green for a gradual switch."""
    gradual_step_delay_s: float = 10.0
    """Seconds between gradual steps."""
    canary: CanaryPlan = field(default_factory=CanaryPlan)
    """Steps and criteria for a canary switch."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "switch", SwitchMode(self.switch))
        except ValueError:
            raise InvalidArgument(
                f"switch must be immediate, gradual or canary, got {quoted(self.switch)}",
                field="switch",
            ) from None
        object.__setattr__(self, "gradual_steps", validate_steps(self.gradual_steps))
        for name in ("cleanup_delay_s", "warmup_s", "gradual_step_delay_s"):
            check_seconds(name, getattr(self, name), MAX_ROLLOUT_SECONDS)
        limit = self.max_latency_p95_ms
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int | float)
            or not 0 < limit <= MAX_LATENCY_MS
        ):
            raise InvalidArgument(f"max_latency_p95_ms must be > 0 and <= {MAX_LATENCY_MS:g}, "
                                  "or None", field="max_latency_p95_ms")

    def traffic_steps(self) -> tuple[int, ...]:
        """Percent on green at each step of the switch."""
        if self.switch is SwitchMode.IMMEDIATE:
            return (100,)
        if self.switch is SwitchMode.GRADUAL:
            return self.gradual_steps
        return self.canary.steps

    def cleanup_at(self, switched_at: float) -> float:
        """When blue may be removed, given when traffic finished moving to green."""
        return switched_at + self.cleanup_delay_s


def judge_green(
    plan: BlueGreenPlan, healthy: bool, failed_checks: Sequence[str], p95_ms: float | None
) -> Verdict:
    """Green's validation: health, integration checks, then the performance threshold."""
    reasons: list[str] = []
    if not healthy:
        reasons.append("green is not healthy")
    reasons.extend(f"integration check failed: {name}" for name in failed_checks)
    limit = plan.max_latency_p95_ms
    if limit is not None:
        if p95_ms is None:
            reasons.append("no latency measured for the performance check")
        elif p95_ms > limit:
            reasons.append(f"latency p95 {p95_ms:.1f} ms > max {limit:.1f} ms")
    if reasons:
        return Verdict(Outcome.FAIL, tuple(reasons))
    passed = ["green is healthy", "integration checks passed"]
    if limit is not None and p95_ms is not None:
        passed.append(f"latency p95 {p95_ms:.1f} ms <= max {limit:.1f} ms")
    return Verdict(Outcome.PASS, tuple(passed))
