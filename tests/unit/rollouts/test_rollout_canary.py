"""Canary rollouts end to end through the runner, with a simulated fleet and a fake clock."""

from __future__ import annotations

from dataclasses import replace

from rollout_sim import Traffic, World, make_record

from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.record import Phase
from coordinator.rollouts.settings import RolloutSettings, Strategy

CRITERIA = SuccessCriteria(max_error_rate=0.02, max_latency_p95_ms=200.0, min_requests=50)
CANARY = RolloutSettings(
    strategy=Strategy.CANARY,
    replicas=2,
    monitor_s=60.0,
    step_delay_s=10.0,
    inconclusive_deadline_s=180.0,
    criteria=CRITERIA,
    cleanup_delay_s=30.0,
)


async def test_good_canary_goes_through_every_step_to_promoted() -> None:
    world = World()
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.PROMOTED
    assert world.splits_of("1.1.0") == [5.0, 25.0, 50.0, 100.0]
    assert [s.outcome for s in end.steps] == ["passed"] * 4
    assert all(s.canary is not None and s.canary.requests >= 50 for s in end.steps)
    assert world.of_version("1.0.0") == [] and len(world.of_version("1.1.0")) == 2
    assert world.stable_version == "1.1.0"
    assert world.unit_states == ["deploying", "rolling_out", "running"]
    types = world.event_types()
    assert types[0] == "rollout.started" and "rollout.promoted" in types
    assert types.count("rollout.step") >= 4
    # each step was watched for the monitor duration, then the step delay passed
    for before, after in zip(end.steps, end.steps[1:], strict=False):
        assert before.ended_at is not None
        assert before.ended_at - before.started_at >= 60.0
        assert after.started_at - before.ended_at >= 10.0
    # the old version outlived the switch by the cleanup delay
    stop_at = next(t for t, what in world.log if what == "stop 1.0.0")
    last_ended = end.steps[-1].ended_at
    assert last_ended is not None and stop_at - last_ended >= 30.0


async def test_a_sticky_canary_is_sticky_through_its_steps_only() -> None:
    world = World()
    end = await world.run(make_record(replace(CANARY, sticky=True)))
    assert end.phase is Phase.PROMOTED
    sticky = [split.get("1.1.0", 0.0) for split, on in world.sticky_history if on]
    assert sticky[0] == 5.0 and sticky[-1] == 100.0 and set(sticky) == {5.0, 25.0, 50.0, 100.0}
    assert world.sticky_history[-1] == ({"1.1.0": 100.0}, False)  # promoted: not sticky
    bad = World(traffic={"1.1.0": Traffic(error_rate=0.2)})
    await bad.run(make_record(replace(CANARY, sticky=True)))
    assert bad.sticky_history[-1] == ({"1.0.0": 100.0}, False)  # rolled back: not sticky


async def test_bad_canary_rolls_back_at_the_first_step_with_the_measurements() -> None:
    world = World(traffic={"1.1.0": Traffic(error_rate=0.2)})
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.ROLLED_BACK
    assert world.split == {"1.0.0": 100.0}
    assert world.splits_of("1.1.0") == [5.0, 0.0]
    assert world.of_version("1.1.0") == [] and len(world.of_version("1.0.0")) == 2
    failed = end.steps[0]
    assert failed.outcome == "failed" and failed.canary is not None
    assert failed.canary.error_rate is not None and failed.canary.error_rate > 0.1
    assert any("error rate" in r for r in end.failure)
    assert world.stable_version == "1.0.0"
    assert world.unit_states == ["deploying", "rolling_out", "rolling_back", "running"]
    assert world.event_types()[-2:] == ["rollout.failed", "rollout.rolled_back"] or (
        "rollout.failed" in world.event_types() and world.event_types()[-1] == "rollout.rolled_back"
    )


async def test_rollback_commits_then_moves_traffic_before_any_cleanup() -> None:
    world = World(traffic={"1.1.0": Traffic(error_rate=0.5)})
    await world.run(make_record(CANARY))

    order = [what for _, what in world.log]
    back = next(i for i, w in enumerate(order) if w.startswith("commit rolling_back"))
    assert order[back + 1] == "split {'1.0.0': 100.0}"
    assert order.index("stop 1.1.0") > back + 1
    # the failing evaluation and the split back happen at the same simulated instant
    failing = world.commits[[c.phase for c in world.commits].index(Phase.ROLLING_BACK)]
    split_back_at = world.split_history[-1][0]
    assert split_back_at == failing.updated_at


async def test_canary_that_degrades_later_fails_at_that_step() -> None:
    world = World()
    record = make_record(CANARY)
    # healthy for steps 5 % and 25 %; errors start during the 50 % step
    world.at(
        2 + 60 + 10 + 60 + 10 + 20, lambda w: w.traffic.update({"1.1.0": Traffic(error_rate=0.3)})
    )
    end = await world.run(record)

    assert end.phase is Phase.ROLLED_BACK
    assert [s.outcome for s in end.steps] == ["passed", "passed", "failed"]
    assert end.steps[2].percent == 50
    assert world.split == {"1.0.0": 100.0}


async def test_slow_canary_fails_on_latency() -> None:
    world = World(traffic={"1.1.0": Traffic(latency_ms=400.0), "1.0.0": Traffic()})
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.ROLLED_BACK
    assert any("latency p95" in r and "> max 200.0 ms" in r for r in end.failure)
    assert end.steps[0].canary is not None and end.steps[0].canary.p95_ms is not None
    assert end.steps[0].canary.p95_ms > 390.0


async def test_canary_worse_than_stable_fails_even_within_the_absolute_criteria() -> None:
    loose = replace(CANARY, criteria=SuccessCriteria(max_error_rate=0.5, min_requests=50))
    world = World(rps=1000.0, traffic={"1.1.0": Traffic(error_rate=0.2)})
    end = await world.run(make_record(loose))
    assert end.phase is Phase.ROLLED_BACK
    assert any("canary error rate" in r and "increase" in r for r in end.failure)


async def test_too_few_requests_hold_the_step_then_fail_it_at_the_deadline() -> None:
    world = World(rps=10.0)  # 5 % of 10 rps: 30 requests a minute, minimum is 50 per window
    strict = replace(CANARY, criteria=replace(CRITERIA, min_requests=500))
    end = await world.run(make_record(strict))

    assert end.phase is Phase.ROLLED_BACK
    assert any("inconclusive" in r for r in end.failure)
    held = [c for c in world.commits if c.steps and c.steps[0].outcome == "inconclusive"]
    assert held, "the step was recorded as held before it failed"
    first = end.steps[0]
    assert first.ended_at is not None and first.ended_at - first.started_at >= 180.0
    assert world.split == {"1.0.0": 100.0}


async def test_inconclusive_step_is_held_and_passes_once_requests_arrive() -> None:
    world = World(rps=10.0)
    world.at(100, lambda w: setattr(w, "rps", 200.0))
    end = await world.run(make_record(CANARY))

    assert end.phase is Phase.PROMOTED
    first = end.steps[0]
    assert first.outcome == "passed"
    assert first.ended_at is not None and first.ended_at - first.started_at >= 120.0
    assert any(c.steps and c.steps[0].outcome == "inconclusive" for c in world.commits)


async def test_escalated_canary_instance_fails_the_rollout() -> None:
    world = World()
    world.at(70, lambda w: w.escalate("1.1.0"))
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.ROLLED_BACK
    assert any("escalated" in r for r in end.failure)
    assert world.split == {"1.0.0": 100.0} and world.of_version("1.1.0") == []


async def test_unhealthy_canary_holds_the_step_until_it_heals() -> None:
    world = World()
    world.at(30, lambda w: w.set_health("1.1.0", False))
    world.at(250, lambda w: w.set_health("1.1.0", True))
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.PROMOTED
    second = next(t for t, split in world.split_history if split.get("1.1.0") == 25.0)
    assert second >= world.commits[0].created_at + 250
    assert any(c.unhealthy_since is not None for c in world.commits)


async def test_canary_unhealthy_past_the_deadline_is_rolled_back() -> None:
    world = World()
    world.at(30, lambda w: w.set_health("1.1.0", False))
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.ROLLED_BACK
    assert any("unhealthy for" in r for r in end.failure)
    assert world.split == {"1.0.0": 100.0}


async def test_instances_that_never_get_healthy_fail_before_any_traffic_moves() -> None:
    world = World(start_delay_s=10_000.0)
    end = await world.run(make_record(replace(CANARY, deploy_timeout_s=120.0)))
    assert end.phase is Phase.FAILED
    assert world.split_history == [] and world.split == {"1.0.0": 100.0}
    assert any("healthy after 120 s" in r for r in end.failure)
    assert world.unit_states == ["deploying", "rolling_back", "running"]


async def test_a_failed_start_fails_the_rollout_before_traffic_moves_with_its_error() -> None:
    world = World()

    def pull_failed(w: World) -> None:
        for iid, inst in list(w.instances.items()):
            if inst.version == "1.1.0":
                w.instances[iid] = replace(inst, healthy=False, state="error", start_error=(
                    "pulling 127.0.0.1:5999/app@sha256:ab failed: connection refused"))
                break

    world.at(1, pull_failed)
    end = await world.run(make_record(CANARY))
    assert end.phase is Phase.FAILED and not end.traffic_moved
    assert "could not start: pulling 127.0.0.1:5999/app@sha256:ab failed: connection " \
           "refused" in end.reason
    assert end.ended_at is not None and end.ended_at - end.created_at < 5
    assert world.splits_of("1.1.0") == [] and world.split == {"1.0.0": 100.0}
    assert world.of_version("1.1.0") == []
