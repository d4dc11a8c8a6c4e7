"""Blue-green plans and green validation."""

from __future__ import annotations

import pytest

from common.bluegreen import BlueGreenPlan, SwitchMode, judge_green
from common.canary import CanaryPlan
from common.errors import InvalidArgument
from common.rollout_policy import Outcome


def test_defaults() -> None:
    plan = BlueGreenPlan()
    assert plan.switch is SwitchMode.IMMEDIATE and plan.cleanup_delay_s == 30.0
    assert plan.traffic_steps() == (100,)
    assert plan.cleanup_at(1000.0) == 1030.0


def test_switch_modes_give_their_steps() -> None:
    assert BlueGreenPlan(switch=SwitchMode.GRADUAL).traffic_steps() == (25, 50, 75, 100)
    canary = CanaryPlan(steps=(10, 100))
    assert BlueGreenPlan(switch="canary", canary=canary).traffic_steps() == (10, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"switch": "sideways"}, "immediate, gradual or canary"),
        ({"cleanup_delay_s": -1}, "cleanup_delay_s"),
        ({"gradual_steps": (50, 40, 100)}, "strictly increase"),
        ({"max_latency_p95_ms": 0}, "max_latency_p95_ms"),
    ],
)
def test_bad_plans(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        BlueGreenPlan(**kwargs)  # type: ignore[arg-type]


def test_green_validation() -> None:
    plan = BlueGreenPlan(max_latency_p95_ms=200)
    ok = judge_green(plan, healthy=True, failed_checks=[], p95_ms=120.0)
    assert ok.outcome is Outcome.PASS and "latency p95 120.0 ms <= max 200.0 ms" in ok.reasons
    bad = judge_green(plan, healthy=False, failed_checks=["login"], p95_ms=350.0)
    assert bad.outcome is Outcome.FAIL
    assert bad.reasons == (
        "green is not healthy",
        "integration check failed: login",
        "latency p95 350.0 ms > max 200.0 ms",
    )
    unmeasured = judge_green(plan, healthy=True, failed_checks=[], p95_ms=None)
    assert unmeasured.reasons == ("no latency measured for the performance check",)
    assert judge_green(BlueGreenPlan(), True, [], None).outcome is Outcome.PASS
