"""Operator controls, retry, the fast rollback path and a unit's first deploy."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rollout_sim import Traffic, World, make_record

from common.errors import FailedPrecondition
from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.controls import request_control, retry_rollout
from coordinator.rollouts.record import Control, Phase
from coordinator.rollouts.settings import RolloutSettings, Strategy

CANARY = RolloutSettings(
    strategy=Strategy.CANARY,
    replicas=2,
    monitor_s=60.0,
    step_delay_s=10.0,
    criteria=SuccessCriteria(min_requests=50),
)


async def test_promote_skips_the_remaining_steps() -> None:
    world = World()
    world.at(90, lambda w: w.control("r1", Control.PROMOTE))
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.PROMOTED
    assert world.splits_of("1.1.0") == [5.0, 25.0, 100.0]
    assert [s.outcome for s in end.steps] == ["passed", "skipped"]
    assert world.of_version("1.0.0") == []


async def test_abort_rolls_back_now_and_ends_aborted() -> None:
    world = World()
    world.at(90, lambda w: w.control("r1", Control.ABORT))
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.ABORTED
    assert world.split == {"1.0.0": 100.0} and world.of_version("1.1.0") == []
    assert end.failure == ("aborted by request",)
    back_at = world.split_history[-1][0]
    assert back_at - (world.commits[0].created_at + 90) < 1.0
    assert world.stable_version == "1.0.0"


async def test_pause_holds_the_step_and_resume_continues() -> None:
    world = World()
    world.at(20, lambda w: w.control("r1", Control.PAUSE))
    world.at(20 + 3600, lambda w: w.control("r1", Control.RESUME))
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.PROMOTED
    assert world.splits_of("1.1.0") == [5.0, 25.0, 50.0, 100.0]
    second = next(t for t, split in world.split_history if split.get("1.1.0") == 25.0)
    start = world.commits[0].created_at
    # the first step was watched afresh for the whole monitor duration after resuming
    assert second >= start + 20 + 3600 + 60
    assert any(c.paused and c.public_phase() == "paused" for c in world.commits)


async def test_a_failing_canary_still_rolls_back_after_resume() -> None:
    world = World(traffic={"1.1.0": Traffic(error_rate=0.5)})
    world.at(1, lambda w: w.control("r1", Control.PAUSE))
    world.at(500, lambda w: w.control("r1", Control.RESUME))
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.ROLLED_BACK


async def test_abort_while_deploying_removes_new_instances_without_touching_traffic() -> None:
    world = World(start_delay_s=100.0)
    world.at(10, lambda w: w.control("r1", Control.ABORT))
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.ABORTED
    assert world.split_history == [] and world.of_version("1.1.0") == []


async def test_retry_runs_a_new_attempt_of_a_rolled_back_rollout() -> None:
    world = World(traffic={"1.1.0": Traffic(error_rate=0.5)})
    failed = await world.run(make_record(CANARY))
    assert failed.phase is Phase.ROLLED_BACK

    world.traffic.clear()  # the cause is fixed
    again = retry_rollout(
        failed, "r2", world.clock.now(), world.stable_version, old_instances=("old-0", "old-1")
    )
    assert again.attempt == 2 and again.retry_of == "r1" and again.phase is Phase.PENDING
    end = await world.run(again)
    assert end.phase is Phase.PROMOTED and world.stable_version == "1.1.0"


def test_controls_are_refused_when_the_phase_does_not_allow_them() -> None:
    record = make_record(CANARY)
    deploying = replace(record, phase=Phase.DEPLOYING)
    with pytest.raises(FailedPrecondition, match="cannot be promoted while deploying"):
        request_control(deploying, Control.PROMOTE, 0.0)
    with pytest.raises(FailedPrecondition, match="is not paused"):
        request_control(deploying, Control.RESUME, 0.0)
    done = replace(record, phase=Phase.ROLLED_BACK)
    with pytest.raises(FailedPrecondition, match=r"already ended .*use retry"):
        request_control(done, Control.ABORT, 0.0)
    back = replace(record, phase=Phase.ROLLING_BACK)
    with pytest.raises(FailedPrecondition, match="already rolling back"):
        request_control(back, Control.PAUSE, 0.0)
    paused = request_control(deploying, Control.PAUSE, 0.0)
    assert request_control(paused, Control.PAUSE, 0.0) is paused  # idempotent
    assert request_control(paused, Control.RESUME, 0.0).pending_controls == (
        Control.PAUSE,
        Control.RESUME,
    )
    with pytest.raises(FailedPrecondition, match="only an ended rollout"):
        retry_rollout(deploying, "r2", 0.0, "1.0.0")
    with pytest.raises(FailedPrecondition, match="nothing to retry"):
        retry_rollout(replace(record, phase=Phase.PROMOTED), "r2", 0.0, "1.0.0")


async def test_fast_rollback_reuses_kept_instances_and_switches_at_once() -> None:
    world = World()
    world.stable_version = "1.1.0"
    # 1.1.0 is stable; 1.0.0's instances are still kept (blue within its cleanup delay)
    world.split = {"1.1.0": 100.0}
    world.instances.update(
        {
            f"new-{i}": replace(
                world.instances[f"old-{i}"], instance_id=f"new-{i}", version="1.1.0"
            )
            for i in range(2)
        }
    )
    world.born.update({f"new-{i}": world.clock.now() - 60 for i in range(2)})
    settings = RolloutSettings(strategy=Strategy.ROLLBACK, replicas=2)
    record = make_record(settings, from_version="1.1.0", to_version="1.0.0")
    end = await world.run(record)

    assert end.phase is Phase.PROMOTED
    assert world.starts == 0, "the kept instances were used"
    assert world.split_history == [(world.split_history[0][0], {"1.0.0": 100.0})]
    assert "checks" not in [w for _, w in world.log]
    assert world.of_version("1.1.0") == [] and world.stable_version == "1.0.0"
    assert world.unit_states == ["deploying", "rolling_back", "running"]
    elapsed = world.split_history[0][0] - record.created_at
    assert elapsed < 1.0, "no warm-up, validation or analysis on the fast path"


async def test_first_deploy_simply_starts_the_unit() -> None:
    world = World()
    world.instances.clear()
    world.split = {}
    world.unit_state = world.unit_state.__class__("idle")
    world.stable_version = ""
    settings = RolloutSettings(strategy=Strategy.INITIAL, replicas=3)
    end = await world.run(make_record(settings, from_version=""))

    assert end.phase is Phase.PROMOTED
    assert len(world.of_version("1.1.0")) == 3
    assert world.split == {"1.1.0": 100.0}
    assert world.unit_states == ["deploying", "rolling_out", "running"]
    assert world.stable_version == "1.1.0"


async def test_failed_first_deploy_leaves_the_unit_idle() -> None:
    world = World(start_delay_s=10_000.0)
    world.instances.clear()
    world.split = {}
    world.unit_state = world.unit_state.__class__("idle")
    settings = RolloutSettings(strategy=Strategy.INITIAL, replicas=1, deploy_timeout_s=60.0)
    end = await world.run(make_record(settings, from_version=""))
    assert end.phase is Phase.FAILED
    assert world.unit_states == ["deploying", "rolling_back", "idle"]
    assert world.instances == {}


async def test_repeated_action_failures_fail_the_rollout_and_undo_it() -> None:
    world = World()
    world.fail_actions = {"checks"}
    settings = RolloutSettings(strategy=Strategy.BLUE_GREEN, replicas=1, warmup_s=0.0)
    end = await world.run(make_record(settings))
    assert end.phase is Phase.FAILED
    assert any("validating failed 3 times" in r for r in end.failure)
    assert world.of_version("1.1.0") == []


async def test_an_undo_that_keeps_failing_leaves_the_unit_failed() -> None:
    world = World(traffic={"1.1.0": Traffic(error_rate=0.5)})
    world.fail_actions = {"stop"}
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.FAILED and end.undo_failed
    assert world.unit_states[-1] == "failed"
    assert world.split == {"1.0.0": 100.0}, "traffic went back before the cleanup failed"
