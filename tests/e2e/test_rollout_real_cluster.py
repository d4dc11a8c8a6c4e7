"""Rollouts end to end: real etcd, coordinator, three agents, Docker and HAProxy, under load.

One deployment, in file order:

1. e2e/shop 1.0.0 is published with 1.1.0 (good) and 2.0.0 (ERROR_RATE=0.2) and first
   deployed with three replicas (one per host);
2. a client per host sends requests to its host's entry point for the whole test;
3. a canary to 1.1.0 (steps 25, 100) reaches 100 % and is promoted with zero failed
   requests, and afterwards every answer comes from 1.1.0;
4. a canary to 2.0.0 fails its first step and is rolled back by itself: the only failed
   requests are the 500s that 2.0.0 itself answered, and afterwards every answer comes from
   1.1.0 again on every host.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster
from tests.e2e.real_load import (
    HOSTS,
    Load,
    failed,
    list_hosts,
    list_instances,
    publish,
    real_cluster,
    seconds,
    serving,
    unit_spec,
)
from tests.support import eventually

APARTMENT, UNIT = "e2e", "shop"
RUNNING = types_pb2.INSTANCE_STATE_RUNNING

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with real_cluster() as real:
        yield real


def _publish(admin: Any, version: str, port: int, env: dict[str, str],
             changes: types_pb2.ChangeSet) -> None:
    publish(admin, unit_spec(APARTMENT, UNIT, version, port, env=env), version, changes)


def _instances(cluster: RealCluster) -> list[Any]:
    return list_instances(cluster, APARTMENT, UNIT)


def _only_running(cluster: RealCluster, version: str) -> bool:
    found = _instances(cluster)
    assert len(found) == 3, [(i.version, i.state) for i in found]
    assert all(i.version == version and i.state == RUNNING for i in found), found
    return True


def _rollout(cluster: RealCluster) -> Any:
    with cluster.admin() as admin:
        return admin.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=UNIT),
                                timeout=5)


def _canary(version: str) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version=version,
                                      building="demo", replicas=3,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend([25, 100])
    request.canary.monitor.CopyFrom(seconds(4))
    request.canary.step_delay.CopyFrom(seconds(1))
    request.canary.inconclusive_deadline.CopyFrom(seconds(30))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 20
    return request


def _ended(cluster: RealCluster, rollout_id: str, phases: set[str]) -> Any:
    info = _rollout(cluster)
    assert info.rollout_id == rollout_id and info.phase in phases, (info.phase, info.reason)
    return info


@pytest.fixture(scope="module")
def load(cluster: RealCluster) -> Iterator[Load]:
    eventually(lambda: len([h for h in list_hosts(cluster) if h.status == "alive"]) == 3,
               timeout=60, message="three hosts alive")
    port = free_port_on_all(list(HOSTS.values()))
    with cluster.admin() as admin:
        _publish(admin, "1.0.0", port, {}, types_pb2.ChangeSet(features=["first"]))
        _publish(admin, "1.1.0", port, {}, types_pb2.ChangeSet(features=["faster"]))
        _publish(admin, "2.0.0", port, {"ERROR_RATE": "0.2"},
                 types_pb2.ChangeSet(breaking=["new API"]))
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version="1.0.0",
                                             building="demo", replicas=3), timeout=30)
    eventually(lambda: _only_running(cluster, "1.0.0"), timeout=90, interval=0.5)
    eventually(lambda: serving(port), timeout=60, interval=0.5,
               message="every entry point serves")
    running = Load(port).start()
    yield running
    running.close()


def test_good_canary_is_promoted_with_zero_failed_requests(cluster: RealCluster,
                                                           load: Load) -> None:
    start = time.monotonic()
    with cluster.admin() as admin:
        rollout_id = admin.Deploy(_canary("1.1.0"), timeout=30).rollout.rollout_id
    info = eventually(lambda: _ended(cluster, rollout_id, {"promoted"}), timeout=150,
                      interval=0.5, message="canary to 1.1.0 promoted")
    assert [s.target_percent for s in info.steps] == [25, 100]
    assert all(s.outcome == "passed" for s in info.steps), info.steps
    # The old version's instances are drained and removed after the last step.
    eventually(lambda: _only_running(cluster, "1.1.0"), timeout=90, interval=0.5)
    settle = load.settled()
    answers = load.since(start)
    assert len(answers) > 300, len(answers)
    assert not failed(answers), failed(answers)[:10]
    served = {a.version for a in answers}
    assert served == {"1.0.0", "1.1.0"}, served
    assert {a.version for a in load.since(settle)} == {"1.1.0"}


def test_bad_canary_rolls_back_by_itself(cluster: RealCluster, load: Load) -> None:
    start = time.monotonic()
    with cluster.admin() as admin:
        rollout_id = admin.Deploy(_canary("2.0.0"), timeout=30).rollout.rollout_id
    info = eventually(lambda: _ended(cluster, rollout_id, {"rolled_back"}), timeout=150,
                      interval=0.5, message="canary to 2.0.0 rolled back")
    failed_step = info.steps[-1]
    assert failed_step.outcome == "failed" and failed_step.target_percent == 25
    assert any("error rate" in r for r in failed_step.reasons), failed_step.reasons
    eventually(lambda: _only_running(cluster, "1.1.0"), timeout=90, interval=0.5)
    settle = load.settled()
    answers = load.since(start)
    errors = failed(answers)
    # Failures caused by switching (no answer, or a 5xx not from 2.0.0): none.
    assert not [a for a in errors if a.version != "2.0.0"], errors[:10]
    assert errors, "2.0.0 answered some 500s while it had its canary share"
    after = load.since(settle)
    assert {a.version for a in after} == {"1.1.0"} and not failed(after)
    assert {a.host for a in after} == set(HOSTS.values())
