"""A new leader resumes a rollout from every committed step, with the same outcome.

Each scenario runs once without interruption to learn how many commits it makes; then once
per commit with the leader dying right after that commit (before its actions) and once per
commit with it dying just before the next commit (after the actions ran, so the new leader
carries them out a second time). Every run must end exactly like the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from rollout_sim import Traffic, World, make_record

from common.bluegreen import SwitchMode
from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.actions import SetSplit, StartInstances, StopInstances
from coordinator.rollouts.engine import actions_for
from coordinator.rollouts.record import Control, Phase, RolloutRecord
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, Strategy

CRITERIA = SuccessCriteria(min_requests=50)
CANARY = RolloutSettings(
    strategy=Strategy.CANARY,
    replicas=2,
    monitor_s=30.0,
    step_delay_s=5.0,
    criteria=CRITERIA,
    cleanup_delay_s=20.0,
)
BLUE_GREEN = RolloutSettings(
    strategy=Strategy.BLUE_GREEN,
    replicas=2,
    warmup_s=3.0,
    checks=(CheckSpec(path="/"),),
    max_latency_p95_ms=100.0,
    switch=SwitchMode.GRADUAL,
    gradual_steps=2,
    gradual_step_delay_s=5.0,
    cleanup_delay_s=20.0,
)


def _good(world: World) -> None:
    return None


def _bad_canary(world: World) -> None:
    world.traffic["1.1.0"] = Traffic(error_rate=0.3)


def _bad_later(world: World) -> None:
    world.at(50, lambda w: w.traffic.update({"1.1.0": Traffic(error_rate=0.3)}))


def _failing_checks(world: World) -> None:
    world.failed_checks = ("GET / -> 200",)


def _aborted(world: World) -> None:
    world.at(40, lambda w: w.control("r1", Control.ABORT))


SCENARIOS: dict[str, tuple[RolloutSettings, Callable[[World], None]]] = {
    "good canary": (CANARY, _good),
    "bad canary": (CANARY, _bad_canary),
    "canary failing at a later step": (CANARY, _bad_later),
    "blue-green gradual": (BLUE_GREEN, _good),
    "blue-green failing validation": (BLUE_GREEN, _failing_checks),
    "aborted canary": (CANARY, _aborted),
    "manual promotion": (
        replace(BLUE_GREEN, manual_promotion=True),
        lambda w: w.at(100, lambda x: x.control("r1", Control.PROMOTE)),
    ),
}


def _summary(world: World, end: RolloutRecord) -> tuple[object, ...]:
    return (
        end.phase,
        tuple(s.outcome for s in end.steps),
        dict(world.split),
        tuple(sorted((i.version, i.host_id) for i in world.instances.values())),
        world.stable_version,
        world.unit_state,
        tuple(sorted(set(world.unit_states))),
    )


async def _run(name: str, **crash: int) -> tuple[World, RolloutRecord]:
    settings, setup = SCENARIOS[name]
    world = World(**crash)
    setup(world)
    end = await world.run(make_record(settings))
    return world, end


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_resume_after_a_leader_change_at_every_committed_step(name: str) -> None:
    reference, end = await _run(name)
    expected = _summary(reference, end)
    assert end.terminal
    commits = len(reference.commits)
    for k in range(1, commits + 1):
        for mode in ("crash_after_commits", "crash_before_commits"):
            world, resumed_end = await _run(name, **{mode: k})
            assert world.crashes == 1 or (mode == "crash_before_commits" and k == 1)
            assert _summary(world, resumed_end) == expected, f"{mode}={k}"
            assert world.starts == reference.starts, "no instance was started twice"
            # the whole history of the resumed run is a valid rollout too
            phases = [c.phase for c in world.commits]
            assert phases[-1] is end.phase and sum(p is end.phase for p in phases) == 1


async def test_actions_of_every_committed_record_are_idempotent() -> None:
    reference, _ = await _run("good canary")
    for record in reference.commits:
        if record.phase is Phase.VALIDATING:
            continue
        world = World()
        await world.start(record, StartInstances("1.1.0", "green", 2))
        world.clock.advance(3600)  # every new instance is healthy
        world.split = dict(record.split())
        await _carry_out(world, record)
        once = (dict(world.split), sorted(world.instances), world.unit_state, world.stable_version)
        await _carry_out(world, record)
        twice = (dict(world.split), sorted(world.instances), world.unit_state, world.stable_version)
        assert once == twice, record.phase


async def _carry_out(world: World, record: RolloutRecord) -> None:
    for action in actions_for(record):
        if isinstance(action, StartInstances):
            await world.start(record, action)
        elif isinstance(action, SetSplit):
            await world.set_split(record, action)
        elif isinstance(action, StopInstances):
            await world.stop(record, action)
