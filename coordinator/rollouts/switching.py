"""Traffic steps: drive ``common.canary.next_action`` with merged windows and record each step.

A judged step (canary, or a blue-green canary switch) is judged on the canary's window since
the step began (``record.window_start``), merged over every host, against the success
criteria and against the stable version's own window over the same period; a failure of
either fails the step at once, even before the monitor duration ends. Too few requests hold
the step (recorded as inconclusive) for more monitoring periods, up to the deadline that
fails it. Unjudged steps (immediate or gradual switch, fast rollback) pass as soon as their
split is in place, then wait the step delay.
"""

from __future__ import annotations

from dataclasses import replace

from common.canary import CanaryProgress, Promote, Rollback, SetTraffic, next_action
from common.canary import Phase as StepPhase
from common.rollout_policy import Outcome, Verdict, Window, compare, evaluate
from coordinator.rollouts.actions import EmitEvent, Observations
from coordinator.rollouts.record import Measurement, Phase, RolloutRecord, StepRecord
from coordinator.rollouts.transitions import enter_completing, event, start_rollback

__all__ = ["judge", "next_wake_switching", "switch_step"]


def judge(record: RolloutRecord, obs: Observations) -> Verdict:
    """The verdict on the current step's windows (always pass for an unjudged switch)."""
    settings = record.settings
    if not settings.judged:
        return Verdict(Outcome.PASS, ("split in place; this switch is not judged",))
    canary = obs.canary or Window()
    verdict = evaluate(canary, settings.criteria)
    if settings.comparison is None or not record.has_stable or obs.stable is None:
        return verdict
    against = compare(canary, obs.stable, settings.comparison)
    if against.outcome is Outcome.FAIL:
        failed = verdict.reasons if verdict.outcome is Outcome.FAIL else ()
        return Verdict(Outcome.FAIL, (*failed, *against.reasons),
                       {**verdict.metrics, **against.metrics})
    if verdict.outcome is Outcome.PASS and against.outcome is Outcome.PASS:
        return Verdict(Outcome.PASS, (*verdict.reasons, *against.reasons), verdict.metrics)
    return verdict


def _measured(obs: Observations) -> tuple[Measurement | None, Measurement | None]:
    return (
        None if obs.canary is None else Measurement.of(obs.canary),
        None if obs.stable is None else Measurement.of(obs.stable),
    )


def switch_step(
    record: RolloutRecord, obs: Observations, now: float, may_advance: bool = True
) -> tuple[RolloutRecord, list[EmitEvent]]:
    """One move of the step machine: hold, pass, advance, promote or fail the step.

    ``may_advance`` False (a new instance is unhealthy) still lets a failing verdict roll
    back, but holds the step instead of giving the new version more traffic.
    """
    plan = record.settings.step_plan()
    progress = CanaryProgress(record.step_index, StepPhase(record.step_phase),
                              record.step_phase_started_at, record.step_extensions)
    verdict = judge(record, obs)
    decision = next_action(plan, progress, verdict, now)
    percent = plan.steps[record.step_index]
    step = record.current_step() or StepRecord(record.step_index, percent, record.window_start)
    canary, stable = _measured(obs) if record.settings.judged else (None, None)
    action = decision.action
    if isinstance(action, Rollback):
        failed = record.with_step(replace(step, outcome="failed", ended_at=now, canary=canary,
                                          stable=stable, reasons=action.reasons))
        moved = start_rollback(failed, now, Phase.ROLLED_BACK,
                               (f"step {record.step_index + 1} ({percent}%) failed",
                                *action.reasons))
        return moved, [event("rollout.failed", moved, "; ".join(moved.failure),
                             step=str(record.step_index))]
    if isinstance(action, Promote | SetTraffic) and not may_advance:
        return record, []
    passed = step if step.ended_at is not None else replace(
        step, outcome="passed", ended_at=now, canary=canary or step.canary,
        stable=stable or step.stable, reasons=verdict.reasons)
    if isinstance(action, Promote):
        return enter_completing(record.with_step(passed), now, "every step passed")
    if isinstance(action, SetTraffic):
        index = decision.progress.step_index
        moved = replace(
            record.with_step(passed),
            step_index=index,
            step_phase=decision.progress.phase.value,
            step_phase_started_at=now,
            step_extensions=0,
            window_start=now,
            new_percent=float(action.percent),
        ).with_step(StepRecord(index, action.percent, now))
        return moved, [event("rollout.step", moved,
                             f"step {index + 1}: {action.percent}% of traffic to "
                             f"{record.to_version}", step=str(index))]
    if decision.progress == progress:
        return record, []
    # a Wait that changed the progress: the step passed (step delay) or is held
    if decision.progress.phase is StepPhase.WAITING:
        moved = replace(record.with_step(passed), step_phase=StepPhase.WAITING.value,
                        step_phase_started_at=decision.progress.phase_started_at)
        return moved, [event("rollout.step", moved,
                             f"step {record.step_index + 1} ({percent}%) passed: "
                             + "; ".join(verdict.reasons), step=str(record.step_index))]
    held = replace(step, outcome="inconclusive", canary=canary, stable=stable,
                   reasons=verdict.reasons)
    moved = replace(record.with_step(held),
                    step_phase_started_at=decision.progress.phase_started_at,
                    step_extensions=decision.progress.extensions)
    return moved, [event("rollout.step", moved, decision.reason, step=str(record.step_index))]


def next_wake_switching(record: RolloutRecord) -> float:
    plan = record.settings.step_plan()
    if record.step_phase == StepPhase.WAITING.value:
        return record.step_phase_started_at + plan.step_delay_s
    return record.step_phase_started_at + plan.monitor_duration_s
