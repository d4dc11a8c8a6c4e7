"""Any Deploy request message either becomes rollout settings within every bound, which
survive the record's JSON and the answer's protobuf, or is refused with InvalidArgument:
no other error, and nothing proportional to a number done first."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.input_bounds import (
    MAX_GRADUAL_STEPS,
    MAX_PERFORMANCE_REQUESTS,
    MAX_REPLICAS,
    MAX_ROLLOUT_SECONDS,
)
from coordinator.api.rollout_proto import check_to_pb, deploy_from_pb, settings_from_pb
from coordinator.cli.rollout_requests import DeployArgs, build_deploy_request
from coordinator.rollouts.settings import RolloutSettings

INT32 = st.integers(-(2**31), 2**31 - 1)
SMALL = st.integers(1, 100) | st.integers(0, 12_000) | INT32
"""Mostly inside or near the bounds, sometimes anywhere an int32 reaches."""
SECONDS = st.integers(0, 10**6) | st.integers(-(2**40), 2**40)


def _duration(target: object, seconds: int, nanos: int) -> None:
    target.seconds, target.nanos = seconds, nanos  # type: ignore[attr-defined]


@st.composite
def deploy_requests(draw: st.DrawFn) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(
        apartment="shop", unit="web", version="1.1.0", replicas=draw(SMALL),
        strategy=draw(st.sampled_from([types_pb2.STRATEGY_BLUE_GREEN,
                                       types_pb2.STRATEGY_CANARY])))
    bg, canary = request.blue_green, request.canary
    bg.switch_mode = draw(st.sampled_from([types_pb2.SWITCH_MODE_IMMEDIATE,
                                           types_pb2.SWITCH_MODE_GRADUAL,
                                           types_pb2.SWITCH_MODE_CANARY]))
    bg.gradual_steps = draw(SMALL)
    bg.performance_requests = draw(SMALL)
    if draw(st.booleans()):
        canary.steps.extend(draw(st.lists(st.integers(1, 100) | INT32, max_size=5)))
    for target in (canary.monitor, bg.warmup, bg.cleanup_delay, bg.max_latency_p95):
        if draw(st.booleans()):
            _duration(target, draw(SECONDS), draw(st.integers(0, 999_999_999)))
    for path in draw(st.lists(st.text(max_size=20).map(lambda t: "/" + t)
                              | st.text("/abc?=&", max_size=20), max_size=3)):
        request.blue_green.checks.add().http.path = path
    request.criteria.max_error_rate = draw(st.floats(0, 1, width=32) | st.floats(width=32))
    return request


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(deploy_requests())
def test_any_deploy_request_is_bounded_settings_or_invalid_argument(
        request: admin_pb2.DeployRequest) -> None:
    started = time.perf_counter()
    try:
        made = settings_from_pb(request)
    except InvalidArgument:
        assert time.perf_counter() - started < 0.5
        event("refused")
        return
    event("accepted")
    assert 1 <= made.replicas <= MAX_REPLICAS
    assert 1 <= made.gradual_steps <= MAX_GRADUAL_STEPS
    assert 0 <= made.performance_requests <= MAX_PERFORMANCE_REQUESTS
    assert made.monitor_s <= MAX_ROLLOUT_SECONDS and made.warmup_s <= MAX_ROLLOUT_SECONDS
    assert RolloutSettings.from_dict(made.to_dict()) == made
    assert len(made.traffic_steps()) <= 100
    for check in made.checks:
        assert check_to_pb(check).http.path == check.path


def test_a_deploy_naming_no_count_asks_to_keep_the_units_count() -> None:
    unnamed = build_deploy_request(DeployArgs(unit="shop/web", version="1.1.0"))
    assert unnamed.replicas == 0
    kept = deploy_from_pb(unnamed)
    assert kept.keep_replicas and kept.settings.replicas == 1  # 1 for a first deploy
    named = deploy_from_pb(build_deploy_request(DeployArgs(unit="shop/web", version="1.1.0",
                                                           replicas=3)))
    assert not named.keep_replicas and named.settings.replicas == 3
