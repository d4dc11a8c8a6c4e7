"""Blue-green rollouts: validation, the three switch modes, failures before and after."""

from __future__ import annotations

import itertools
from dataclasses import replace

from rollout_sim import Traffic, World, make_record

from common.bluegreen import SwitchMode
from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.actions import (
    CheckReport,
    InstanceView,
    Observations,
    SetSplit,
    StartInstances,
    StopInstances,
    Wait,
)
from coordinator.rollouts.engine import actions_for, plan
from coordinator.rollouts.record import Control, Phase
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, StateMode, Strategy

BLUE_GREEN = RolloutSettings(
    strategy=Strategy.BLUE_GREEN,
    replicas=2,
    warmup_s=5.0,
    checks=(CheckSpec(path="/healthz"), CheckSpec(command="test -f /ready")),
    max_latency_p95_ms=100.0,
    cleanup_delay_s=30.0,
)


async def test_immediate_switch_validates_then_flips_all_traffic_once() -> None:
    world = World()
    end = await world.run(make_record(BLUE_GREEN))

    assert end.phase is Phase.PROMOTED
    assert world.split_history[0][1] == {"1.1.0": 100.0}
    assert len(world.split_history) == 1
    order = [what for _, what in world.log]
    assert order.index("checks") < next(i for i, w in enumerate(order) if w.startswith("split"))
    assert end.validation and any("p95" in r for r in end.validation)
    # warm-up: checks ran at least warmup_s after green was healthy
    checks_at = next(t for t, what in world.log if what == "checks")
    started = next(t for t, what in world.log if what == "start 1.1.0")
    assert checks_at - started >= world.start_delay_s + 5.0
    stop_at = next(t for t, what in world.log if what == "stop 1.0.0")
    assert stop_at - world.split_history[0][0] >= 30.0
    assert world.stable_version == "1.1.0" and world.of_version("1.0.0") == []
    assert world.unit_states == ["deploying", "rolling_out", "running"]


async def test_gradual_switch_moves_traffic_in_equal_steps() -> None:
    settings = replace(
        BLUE_GREEN, switch=SwitchMode.GRADUAL, gradual_steps=4, gradual_step_delay_s=15.0
    )
    world = World()
    end = await world.run(make_record(settings))

    assert end.phase is Phase.PROMOTED
    assert world.splits_of("1.1.0") == [25.0, 50.0, 75.0, 100.0]
    times = [t for t, _ in world.split_history]
    assert all(b - a >= 15.0 for a, b in itertools.pairwise(times))


async def test_canary_switch_judges_each_step() -> None:
    settings = replace(
        BLUE_GREEN,
        switch=SwitchMode.CANARY,
        steps=(10, 50, 100),
        monitor_s=30.0,
        step_delay_s=0.0,
        criteria=SuccessCriteria(min_requests=20),
    )
    world = World()
    end = await world.run(make_record(settings))
    assert end.phase is Phase.PROMOTED
    assert world.splits_of("1.1.0") == [10.0, 50.0, 100.0]
    assert all(s.canary is not None and s.canary.requests >= 20 for s in end.steps)

    bad = World(traffic={"1.1.0": Traffic(error_rate=0.4)})
    end = await bad.run(make_record(settings))
    assert end.phase is Phase.ROLLED_BACK and bad.split == {"1.0.0": 100.0}


async def test_failed_integration_check_removes_green_and_never_touches_traffic() -> None:
    world = World(failed_checks=("GET /healthz -> 200",))
    end = await world.run(make_record(BLUE_GREEN))

    assert end.phase is Phase.FAILED
    assert world.split_history == [] and world.split == {"1.0.0": 100.0}
    assert world.of_version("1.1.0") == [] and len(world.of_version("1.0.0")) == 2
    assert any("integration check failed" in r for r in end.failure)
    assert world.unit_states == ["deploying", "rolling_back", "running"]
    assert "rollout.failed" in world.event_types()


async def test_slow_green_fails_the_performance_check() -> None:
    world = World(check_p95_ms=250.0)
    end = await world.run(make_record(BLUE_GREEN))
    assert end.phase is Phase.FAILED
    assert any("latency p95 250.0 ms > max 100.0 ms" in r for r in end.failure)
    assert world.split_history == []


def test_unhealthy_green_fails_validation() -> None:
    validating = replace(
        make_record(BLUE_GREEN), phase=Phase.VALIDATING, seq=4, healthy_since=1_700_000_002.0
    )
    green = (InstanceView("g0", "h2", "1.1.0", True), InstanceView("g1", "h3", "1.1.0", False))
    obs = Observations(instances=green, applied_seq=4, checks=CheckReport(4, (), 20.0))

    moved, actions = plan(validating, obs, 1_700_000_010.0)

    assert moved.phase is Phase.ROLLING_BACK and moved.end_phase is Phase.FAILED
    assert "green is not healthy" in moved.failure
    assert not any(isinstance(a, SetSplit) for a in actions), "traffic stays untouched"
    assert any(isinstance(a, StopInstances) and a.version == "1.1.0" for a in actions)


def test_validation_waits_for_the_checks_of_its_own_step() -> None:
    validating = replace(make_record(BLUE_GREEN), phase=Phase.VALIDATING, seq=4)
    green = (InstanceView("g0", "h2", "1.1.0", True), InstanceView("g1", "h3", "1.1.0", True))
    stale = Observations(instances=green, applied_seq=4, checks=CheckReport(3, ("x",), 20.0))
    same, actions = plan(validating, stale, 1_700_000_010.0)
    assert same is validating and all(isinstance(a, Wait) for a in actions)


async def test_failure_after_the_switch_moves_traffic_back_to_blue() -> None:
    world = World()
    # during the cleanup delay (blue still exists) a green instance escalates
    world.at(2 + 5 + 10, lambda w: w.escalate("1.1.0"))
    end = await world.run(make_record(BLUE_GREEN))

    assert end.phase is Phase.ROLLED_BACK
    assert world.splits_of("1.1.0") == [100.0, 0.0]
    assert world.split == {"1.0.0": 100.0}
    assert len(world.of_version("1.0.0")) == 2 and world.of_version("1.1.0") == []
    assert world.stable_version == "1.0.0"
    assert world.unit_states == ["deploying", "rolling_out", "rolling_back", "running"]


async def test_manual_promotion_waits_for_promote() -> None:
    settings = replace(BLUE_GREEN, manual_promotion=True)
    world = World()
    world.at(3600, lambda w: w.control("r1", Control.PROMOTE))
    end = await world.run(make_record(settings))

    assert end.phase is Phase.PROMOTED
    assert world.split_history[0][0] >= world.commits[0].created_at + 3600
    waiting = [c for c in world.commits if c.phase is Phase.AWAITING_PROMOTION]
    assert waiting and waiting[0].validation


async def test_snapshot_mode_starts_green_from_blue_state() -> None:
    settings = replace(BLUE_GREEN, state_mode=StateMode.SNAPSHOT)
    world = World()
    record = make_record(settings)

    end = await world.run(record)
    assert end.phase is Phase.PROMOTED
    deploying = next(c for c in world.commits if c.phase is Phase.DEPLOYING)
    start = next(a for a in actions_for(deploying) if isinstance(a, StartInstances))
    assert start.state_from == ("old-0", "old-1") and start.slot == "green"
    shared = next(
        a
        for a in actions_for(replace(deploying, settings=BLUE_GREEN))
        if isinstance(a, StartInstances)
    )
    assert shared.state_from == ()
