"""Canary plans and the step machine."""

from __future__ import annotations

import pytest

from common.canary import (
    DEFAULT_STEPS,
    CanaryPlan,
    CanaryProgress,
    Phase,
    Promote,
    Rollback,
    SetTraffic,
    Wait,
    next_action,
    start_canary,
    validate_steps,
)
from common.errors import FailedPrecondition, InvalidArgument
from common.rollout_policy import Outcome, Verdict

PASS = Verdict(Outcome.PASS, ("fine",))
FAIL = Verdict(Outcome.FAIL, ("error rate 21.3% > max 1.0% over 412 requests",))
UNSURE = Verdict(Outcome.INCONCLUSIVE, ("only 3 requests < minimum 100",))


def test_defaults_follow_the_plan() -> None:
    plan = CanaryPlan()
    assert plan.steps == DEFAULT_STEPS == (5, 25, 50, 100)
    assert plan.monitor_duration_s > 0 and plan.step_delay_s >= 0


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ((), "must not be empty"),
        ((5, 5, 100), "strictly increase; 5 follows 5"),
        ((50, 25, 100), "strictly increase"),
        ((5, 25, 50), "end at 100"),
        ((0, 100), "from 1 to 100"),
        ((5, 101), "from 1 to 100"),
        ((5.5, 100), "whole percentage"),
    ],
)
def test_bad_steps(steps: tuple[int, ...], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate_steps(steps)
    with pytest.raises(InvalidArgument):
        CanaryPlan(steps=steps)


def test_bad_timings() -> None:
    with pytest.raises(InvalidArgument, match="monitor_duration_s"):
        CanaryPlan(monitor_duration_s=-1)
    with pytest.raises(InvalidArgument, match="max_extensions"):
        CanaryPlan(max_extensions=-1)


def run(plan: CanaryPlan, verdicts: list[Verdict | None]) -> list[object]:
    """Drive the machine, feeding one verdict per judgement point, time jumping to each wait."""
    now = 0.0
    decision = start_canary(plan, now)
    actions: list[object] = [decision.action]
    feed = iter(verdicts)
    while not isinstance(decision.action, Promote | Rollback):
        if isinstance(decision.action, Wait):
            now = decision.action.until
        judging = decision.progress.phase is Phase.MONITORING and now >= (
            decision.progress.phase_started_at + plan.monitor_duration_s
        )
        decision = next_action(plan, decision.progress, next(feed) if judging else None, now)
        actions.append(decision.action)
    return actions


def test_happy_path_walks_every_step_then_promotes() -> None:
    plan = CanaryPlan(monitor_duration_s=60, step_delay_s=30)
    actions = run(plan, [PASS] * 4)
    assert [a.percent for a in actions if isinstance(a, SetTraffic)] == [5, 25, 50, 100]
    assert isinstance(actions[-1], Promote)


def test_no_step_delay_goes_straight_to_the_next_share() -> None:
    plan = CanaryPlan(steps=(50, 100), monitor_duration_s=10, step_delay_s=0)
    assert run(plan, [PASS, PASS]) == [
        SetTraffic(50),
        Wait(10),
        SetTraffic(100),
        Wait(20),
        Promote(),
    ]


def test_failure_rolls_back_with_the_reasons() -> None:
    plan = CanaryPlan(monitor_duration_s=60, step_delay_s=0)
    actions = run(plan, [PASS, FAIL])
    assert actions[-1] == Rollback(FAIL.reasons)
    assert [a.percent for a in actions if isinstance(a, SetTraffic)] == [5, 25]


def test_a_fail_mid_step_or_during_the_delay_rolls_back_at_once() -> None:
    plan = CanaryPlan(monitor_duration_s=60, step_delay_s=30)
    start = start_canary(plan, 0.0)
    early = next_action(plan, start.progress, FAIL, 5.0)
    assert early.action == Rollback(FAIL.reasons) and early.progress.phase is Phase.ROLLED_BACK
    waiting = CanaryProgress(1, Phase.WAITING, 100.0)
    assert isinstance(next_action(plan, waiting, FAIL, 110.0).action, Rollback)
    assert next_action(plan, waiting, PASS, 110.0).action == Wait(130.0)


def test_inconclusive_steps_are_watched_again_then_rolled_back() -> None:
    plan = CanaryPlan(monitor_duration_s=60, step_delay_s=0, max_extensions=2)
    actions = run(plan, [UNSURE, UNSURE, UNSURE])
    assert actions[:4] == [SetTraffic(5), Wait(60), Wait(120), Wait(180)]
    final = actions[-1]
    assert isinstance(final, Rollback)
    assert final.reasons[0] == "step 5% still inconclusive after 3 periods"
    assert final.reasons[1] == UNSURE.reasons[0]


def test_missing_metrics_count_as_inconclusive_and_can_recover() -> None:
    plan = CanaryPlan(steps=(100,), monitor_duration_s=60, step_delay_s=0, max_extensions=1)
    assert run(plan, [None, PASS])[-1] == Promote()


def test_a_finished_canary_refuses_more_actions() -> None:
    plan = CanaryPlan()
    with pytest.raises(FailedPrecondition, match="already promoted"):
        next_action(plan, CanaryProgress(3, Phase.PROMOTED, 0.0), PASS, 1.0)
    with pytest.raises(FailedPrecondition, match="already rolled back"):
        next_action(plan, CanaryProgress(0, Phase.ROLLED_BACK, 0.0), PASS, 1.0)
