"""Canary plan and its step machine: set a share, watch it, then advance or roll back.

``next_action`` is pure: given the plan, where the rollout is, the latest verdict on the
canary's window for the current step and the time, it returns what to do next and the new
progress. The caller commits the progress (etcd) before acting, so a new leader resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise

from common.errors import FailedPrecondition, InvalidArgument
from common.input_bounds import MAX_ROLLOUT_SECONDS, check_length, check_seconds, quoted
from common.rollout_policy import Outcome, SuccessCriteria, Verdict

__all__ = [
    "DEFAULT_STEPS",
    "Action",
    "CanaryPlan",
    "CanaryProgress",
    "Decision",
    "Phase",
    "Promote",
    "Rollback",
    "SetTraffic",
    "Wait",
    "next_action",
    "start_canary",
    "validate_steps",
]

DEFAULT_STEPS = (5, 25, 50, 100)


def validate_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """Steps are whole percentages from 1 to 100, strictly increasing, ending at 100 (so
    at most 100 of them, counted before they are read)."""
    if isinstance(steps, str) or not isinstance(steps, Sequence):
        raise InvalidArgument(
            f"canary steps must be a list of percentages, got {quoted(steps)}", field="steps"
        )
    check_length("canary steps", steps, 100, "steps")
    values = tuple(steps)
    if not values:
        raise InvalidArgument("canary steps must not be empty; e.g. 5, 25, 50, 100", field="steps")
    for step in values:
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
            raise InvalidArgument(
                f"canary step {quoted(step)} must be a whole percentage from 1 to 100",
                field="steps",
            )
    for before, after in pairwise(values):
        if after <= before:
            raise InvalidArgument(
                f"canary steps must strictly increase; {after} follows {before}", field="steps"
            )
    if values[-1] != 100:
        raise InvalidArgument(
            f"canary steps must end at 100, the last is {values[-1]}", field="steps"
        )
    return values


@dataclass(frozen=True)
class CanaryPlan:
    """How a canary moves traffic to the new version."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    """Percent of traffic on the new version at each step."""
    monitor_duration_s: float = 300.0
    """How long each step is watched before it is judged."""
    step_delay_s: float = 60.0
    """Pause after a step passes before the next share is set."""
    criteria: SuccessCriteria = field(default_factory=SuccessCriteria)
    max_extensions: int = 2
    """Extra monitoring periods a step gets while too few requests arrive to judge it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_steps(self.steps))
        for name in ("monitor_duration_s", "step_delay_s"):
            check_seconds(name, getattr(self, name), MAX_ROLLOUT_SECONDS)
        if (
            isinstance(self.max_extensions, bool)
            or not isinstance(self.max_extensions, int)
            or (self.max_extensions < 0)
        ):
            raise InvalidArgument("max_extensions must be a whole number >= 0")


class Phase(StrEnum):
    MONITORING = "monitoring"
    WAITING = "waiting"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class CanaryProgress:
    """Where a canary is: step, phase, when the phase began, extensions used."""

    step_index: int
    phase: Phase
    phase_started_at: float
    extensions: int = 0


@dataclass(frozen=True)
class SetTraffic:
    percent: int


@dataclass(frozen=True)
class Wait:
    until: float


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class Rollback:
    reasons: tuple[str, ...]


Action = SetTraffic | Wait | Promote | Rollback


@dataclass(frozen=True)
class Decision:
    action: Action
    progress: CanaryProgress
    reason: str


def start_canary(plan: CanaryPlan, now: float) -> Decision:
    """The first step: send ``steps[0]`` percent to the canary and start watching."""
    progress = CanaryProgress(0, Phase.MONITORING, now)
    return Decision(SetTraffic(plan.steps[0]), progress, f"start canary at {plan.steps[0]}%")


def next_action(
    plan: CanaryPlan, progress: CanaryProgress, verdict: Verdict | None, now: float
) -> Decision:
    """What to do now. A failing verdict rolls back at once, even mid-step."""
    if progress.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
        raise FailedPrecondition(f"the canary has already {progress.phase.value.replace('_', ' ')}")
    percent = plan.steps[progress.step_index]
    if verdict is not None and verdict.outcome is Outcome.FAIL:
        done = replace(progress, phase=Phase.ROLLED_BACK, phase_started_at=now)
        return Decision(Rollback(verdict.reasons), done, f"step {percent}% failed")
    if progress.phase is Phase.WAITING:
        resume_at = progress.phase_started_at + plan.step_delay_s
        if now < resume_at:
            return Decision(Wait(resume_at), progress, f"step delay after {percent}%")
        return _advance(plan, progress, now)
    judge_at = progress.phase_started_at + plan.monitor_duration_s
    if now < judge_at:
        return Decision(Wait(judge_at), progress, f"monitoring {percent}%")
    if verdict is None or verdict.outcome is Outcome.INCONCLUSIVE:
        why = verdict.reasons if verdict is not None else ("no metrics for the step",)
        if progress.extensions < plan.max_extensions:
            extended = replace(progress, phase_started_at=now, extensions=progress.extensions + 1)
            return Decision(
                Wait(now + plan.monitor_duration_s),
                extended,
                f"step {percent}% inconclusive ({'; '.join(why)}); watching again",
            )
        done = replace(progress, phase=Phase.ROLLED_BACK, phase_started_at=now)
        reasons = (
            f"step {percent}% still inconclusive after {progress.extensions + 1} periods",
            *why,
        )
        return Decision(Rollback(reasons), done, "not enough traffic to judge the canary")
    if progress.step_index == len(plan.steps) - 1:
        done = replace(progress, phase=Phase.PROMOTED, phase_started_at=now)
        return Decision(Promote(), done, "all steps passed")
    if plan.step_delay_s > 0:
        waiting = replace(progress, phase=Phase.WAITING, phase_started_at=now)
        return Decision(
            Wait(now + plan.step_delay_s), waiting, f"step {percent}% passed; step delay"
        )
    return _advance(plan, progress, now)


def _advance(plan: CanaryPlan, progress: CanaryProgress, now: float) -> Decision:
    index = progress.step_index + 1
    nxt = CanaryProgress(index, Phase.MONITORING, now)
    return Decision(SetTraffic(plan.steps[index]), nxt, f"advance to {plan.steps[index]}%")
