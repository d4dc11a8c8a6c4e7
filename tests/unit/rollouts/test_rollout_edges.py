"""Record JSON, Deploy settings from protobuf, RolloutInfo out, and aborting a pending one."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rollout_sim import make_record

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.api.rollout_proto import rollout_info, settings_from_pb
from coordinator.rollouts.actions import Observations
from coordinator.rollouts.engine import plan
from coordinator.rollouts.etcd_records import previous_stable
from coordinator.rollouts.record import (
    Control,
    Phase,
    RolloutRecord,
    decode_record,
    encode_record,
)
from coordinator.rollouts.settings import RolloutSettings, Strategy, equal_steps
from coordinator.rollouts.status import rollout_status


def test_deploy_request_settings_and_rollout_info() -> None:
    request = admin_pb2.DeployRequest(apartment="a", unit="u", version="1.1.0", replicas=3,
                                      strategy=types_pb2.STRATEGY_BLUE_GREEN)
    request.blue_green.switch_mode = types_pb2.SWITCH_MODE_GRADUAL
    request.blue_green.gradual_steps = 3
    request.blue_green.max_latency_p95.FromMilliseconds(250)
    request.blue_green.checks.add().http.path = "/ready"
    request.blue_green.checks.add().command = "true"
    request.criteria.min_requests = 7
    settings = settings_from_pb(request)
    assert settings.replicas == 3 and settings.max_latency_p95_ms == 250.0
    assert settings.traffic_steps() == equal_steps(3) == (33, 67, 100)
    assert [c.name for c in settings.checks] == ["GET /ready -> 200", "command 'true'"]
    assert settings.criteria.min_requests == 7

    record = replace(make_record(settings), phase=Phase.SWITCHING, new_percent=33.0)
    info = rollout_info(rollout_status(record))
    assert info.phase == "switching" and info.strategy == types_pb2.STRATEGY_BLUE_GREEN
    assert {s.version: s.target_percent for s in info.split} == {"1.0.0": 67.0, "1.1.0": 33.0}
    assert info.blue_green.gradual_steps == 3 and info.total_steps == 3

    canary = settings_from_pb(admin_pb2.DeployRequest(strategy=types_pb2.STRATEGY_CANARY))
    assert canary.cleanup_delay_s == canary.step_delay_s


def test_aborting_a_rollout_that_has_not_started_ends_it_at_once() -> None:
    pending = replace(make_record(RolloutSettings()), pending_controls=(Control.ABORT,))
    moved, actions = plan(pending, Observations(), 10.0)
    assert moved.phase is Phase.ABORTED and moved.ended_at == 10.0
    assert [a.type for a in actions if hasattr(a, "type")] == ["rollout.rolled_back"]


def test_a_record_round_trips_through_json() -> None:
    record: RolloutRecord = make_record(RolloutSettings(strategy=Strategy.CANARY))
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize(("strategy", "shown"), [
    (Strategy.INITIAL, types_pb2.STRATEGY_INITIAL),
    (Strategy.ROLLBACK, types_pb2.STRATEGY_ROLLBACK),
])
def test_first_deploys_and_rollbacks_say_what_they_are(strategy: Strategy, shown: int) -> None:
    record = make_record(RolloutSettings(strategy=strategy))
    assert rollout_info(rollout_status(record)).strategy == shown
    with pytest.raises(InvalidArgument, match="blue-green or canary"):
        settings_from_pb(admin_pb2.DeployRequest(strategy=shown))  # type: ignore[arg-type]



def test_previous_stable_is_what_the_newest_promotion_to_stable_replaced() -> None:
    def ended(src: str, dst: str, rid: str, phase: Phase) -> RolloutRecord:
        record: RolloutRecord = make_record(RolloutSettings(), src, dst, rid)
        return replace(record, phase=phase)

    history = [ended("1.1.0", "1.2.0", "r4", Phase.FAILED),
               ended("1.0.0", "1.1.0", "r3", Phase.PROMOTED),
               ended("0.9.0", "1.0.0", "r2", Phase.PROMOTED)]
    assert previous_stable(history, "1.1.0") == "1.0.0"
    assert previous_stable(history, "1.0.0") == "0.9.0"
    assert previous_stable(history, "1.2.0") == ""
