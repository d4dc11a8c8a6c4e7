"""Properties of every rollout, whatever the strategy, the traffic, the operator and crashes.

- It ends, in exactly one terminal phase, which is its last committed record.
- Traffic never goes to a version without a healthy instance (the simulated fleet checks
  every split), and a version is never stopped while it has traffic.
- After a rollback (rolled back, failed, aborted) the stable version has 100 % on every host
  and no new instance is left; after a promotion the new version has 100 % and the old one
  is gone.
- Unit state moves only along common.lifecycle's deploy table and ends running.
- Every committed record survives its JSON form (checked on every save).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollout_sim import Traffic, World, make_record

from common.bluegreen import SwitchMode
from common.errors import FailedPrecondition
from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.record import Control, Phase, RolloutRecord
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, Strategy


@dataclass(frozen=True)
class Scenario:
    settings: RolloutSettings
    error_rate: float
    errors_from_s: float
    health_flaps: tuple[tuple[float, float], ...]
    escalate_at: float | None
    controls: tuple[tuple[float, Control], ...]
    failed_checks: bool
    crash_after: int | None
    rps: float


@st.composite
def steps(draw: st.DrawFn) -> tuple[int, ...]:
    chosen = draw(st.sets(st.integers(1, 99), max_size=3))
    return (*sorted(chosen), 100)


@st.composite
def rollout_settings(draw: st.DrawFn) -> RolloutSettings:
    strategy = draw(st.sampled_from([Strategy.CANARY, Strategy.BLUE_GREEN]))
    return RolloutSettings(
        strategy=strategy,
        replicas=draw(st.integers(1, 3)),
        steps=draw(steps()),
        monitor_s=draw(st.sampled_from([10.0, 30.0])),
        step_delay_s=draw(st.sampled_from([0.0, 5.0])),
        inconclusive_deadline_s=60.0,
        criteria=SuccessCriteria(max_error_rate=0.05, min_requests=30),
        switch=draw(st.sampled_from(list(SwitchMode))),
        warmup_s=draw(st.sampled_from([0.0, 3.0])),
        checks=(CheckSpec(path="/"),),
        cleanup_delay_s=draw(st.sampled_from([0.0, 20.0])),
        gradual_steps=draw(st.integers(1, 4)),
        gradual_step_delay_s=5.0,
        manual_promotion=draw(st.booleans()) and strategy is Strategy.BLUE_GREEN,
        deploy_timeout_s=120.0,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    flaps = draw(st.lists(st.tuples(st.floats(0, 300), st.floats(1, 150)), max_size=2))
    controls = draw(
        st.lists(st.tuples(st.floats(0, 400), st.sampled_from(list(Control))), max_size=3)
    )
    return Scenario(
        settings=draw(rollout_settings()),
        error_rate=draw(st.sampled_from([0.0, 0.0, 0.5])),
        errors_from_s=draw(st.floats(0, 200)),
        health_flaps=tuple(flaps),
        escalate_at=draw(st.none() | st.floats(0, 300)),
        controls=tuple(controls),
        failed_checks=draw(st.booleans()),
        crash_after=draw(st.none() | st.integers(1, 12)),
        rps=draw(st.sampled_from([20.0, 200.0])),
    )


def _control(control: Control) -> Callable[[World], None]:
    def apply(world: World) -> None:
        # a control refused in the rollout's phase is what an operator would be told
        with contextlib.suppress(FailedPrecondition):
            world.control("r1", control)

    return apply


def _setup(world: World, s: Scenario) -> None:
    world.rps = s.rps
    if s.error_rate:
        world.at(
            s.errors_from_s, lambda w: w.traffic.update({"1.1.0": Traffic(error_rate=s.error_rate)})
        )
    for start, length in s.health_flaps:
        world.at(start, lambda w: w.set_health("1.1.0", False))
        world.at(start + length, lambda w: w.set_health("1.1.0", True))
    if s.escalate_at is not None:
        world.at(s.escalate_at, lambda w: w.escalate("1.1.0"))
    for at, control in s.controls:
        world.at(at, _control(control))
    # an operator eventually resumes what they paused and promotes what waits for them
    # (a promote sent while the resumed rollout still validates is refused, so they retry)
    for at in range(1000, 10_000, 1000):
        world.at(at, _control(Control.RESUME))
        world.at(at + 500, _control(Control.PROMOTE))
    if s.failed_checks:
        world.failed_checks = ("GET / -> 200",)
    world.crash_after_commits = s.crash_after


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_rollout_ends_once_and_leaves_a_consistent_fleet(s: Scenario) -> None:
    world = World()
    _setup(world, s)
    end: RolloutRecord = asyncio.run(world.run(make_record(s.settings), limit_s=20_000))

    terminal = [c for c in world.commits if c.terminal]
    assert len(terminal) == 1 and terminal[0] == world.commits[-1] == end
    assert end.ended_at is not None
    if end.phase is Phase.PROMOTED:
        assert world.split == {"1.1.0": 100.0}
        assert world.of_version("1.0.0") == []
        assert len(world.of_version("1.1.0")) == s.settings.replicas
        assert world.stable_version == "1.1.0"
    else:
        assert end.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED)
        assert end.failure, "a rollback says why"
        assert world.split == {"1.0.0": 100.0}
        assert world.of_version("1.1.0") == []
        assert len(world.of_version("1.0.0")) == 2
        assert world.stable_version == "1.0.0"
        if end.phase is Phase.FAILED:
            assert not end.traffic_moved or end.undo_failed
    assert world.unit_state.value == "running"
    # the new version's share only grows until a rollback sends it to 0
    shares = world.splits_of("1.1.0")
    if 0.0 in shares:
        shares = shares[: shares.index(0.0)]
    assert shares == sorted(shares)
