"""Rollout scenarios end to end: real etcd, two coordinators, three agents, Docker, HAProxy.

One cluster for the file: two ``landlord-coordinator``s (one leads, one follows) and a
``landlord-agent`` on each of 127.0.0.2-4. Every test has a unit of its own (own service
port), first deployed at 1.0.0 with three replicas, one per host; then:

1. blue-green with an immediate switch, under load on every host's entry point: zero
   failed requests; once a host has answered from green it never answers from blue again,
   although blue still runs until the cleanup delay ends;
2. a green that fails validation (an integration check, or a p95 threshold it cannot meet)
   never answers a request through any entry point; green is removed, the rollout is
   recorded failed with the reason, blue keeps running untouched;
3. a version whose dependency is not running is refused with FAILED_PRECONDITION naming
   it, and nothing is written; once the dependency runs, the same deploy goes through;
4. the demo app's STATE_DIR counter goes from blue to green (state modes shared and
   snapshot): green's count continues from blue's on every host;
5. the leader is killed (SIGKILL) in the middle of a canary under load: the follower takes
   over and promotes it, no instance is lost or duplicated, zero failed requests. (It runs
   last and starts the killed coordinator again, as a follower.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.load import get_json

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster
from tests.e2e.real_load import (
    HOSTS,
    Load,
    failed,
    free_ports,
    list_hosts,
    list_instances,
    publish,
    real_cluster,
    seconds,
    serving,
    unit_containers,
    unit_spec,
)
from tests.support import eventually

APARTMENT = "e2e"
OLD, NEW = "1.0.0", "1.1.0"
RUNNING = types_pb2.INSTANCE_STATE_RUNNING
ENDED = {"promoted", "rolled_back", "failed", "aborted"}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with real_cluster(coordinators=2) as real:
        eventually(lambda: sum(h.status == "alive" for h in list_hosts(real)) == 3,
                   timeout=60, message="three hosts alive")
        yield real


@contextlib.contextmanager
def leading(cluster: RealCluster) -> Iterator[Any]:
    """An Admin stub on the coordinator that leads now (writes need it)."""
    with cluster.admin(cluster.leader()) as admin:
        yield admin


def _instances(cluster: RealCluster, unit: str) -> list[Any]:
    return list_instances(cluster, APARTMENT, unit, cluster.leader())


def _only(cluster: RealCluster, unit: str, version: str) -> list[Any]:
    """The unit's instances, once they are exactly three running ``version``, one per host."""
    found = _instances(cluster, unit)
    assert sorted(i.host_id for i in found) == sorted(HOSTS), [(i.host_id, i.version)
                                                               for i in found]
    assert all(i.version == version and i.state == RUNNING for i in found), found
    return found


def _containers(unit: str) -> dict[str, Any]:
    return {c.labels["landlord.instance"]: c for c in unit_containers(unit)}


def _get(address: str, port: int, path: str = "/") -> dict[str, Any]:
    status, found = get_json(address, port, path)
    assert status == 200, (address, port, path, status)
    return found


def _first_deploy(cluster: RealCluster, unit: str, *, new_env: dict[str, str] | None = None,
                  state_mode: types_pb2.StateMode.ValueType = types_pb2.STATE_MODE_UNSPECIFIED
                  ) -> int:
    """Publish 1.0.0 and 1.1.0 of ``unit``, run 1.0.0 on every host; the service port."""
    [port] = free_ports(1)
    with leading(cluster) as admin:
        publish(admin, unit_spec(APARTMENT, unit, OLD, port, state_mode=state_mode), OLD,
                types_pb2.ChangeSet(features=["first"]))
        publish(admin, unit_spec(APARTMENT, unit, NEW, port, env=new_env,
                                 state_mode=state_mode), NEW,
                types_pb2.ChangeSet(features=["second"]))
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=OLD,
                                             building="demo", replicas=3), timeout=30)
    eventually(lambda: _only(cluster, unit, OLD), timeout=90, interval=0.5,
               message=f"{unit} {OLD} running on every host")
    eventually(lambda: serving(port), timeout=60, interval=0.5,
               message="every entry point serves")
    return port


def _blue_green(unit: str, cleanup_s: float = 2.0) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=NEW,
                                      building="demo", replicas=3,
                                      strategy=types_pb2.STRATEGY_BLUE_GREEN)
    request.blue_green.switch_mode = types_pb2.SWITCH_MODE_IMMEDIATE
    request.blue_green.warmup.CopyFrom(seconds(1))
    request.blue_green.cleanup_delay.CopyFrom(seconds(cleanup_s))
    return request


def _deploy(cluster: RealCluster, request: admin_pb2.DeployRequest) -> str:
    with leading(cluster) as admin:
        return str(admin.Deploy(request, timeout=30).rollout.rollout_id)


class Watch:
    """Polls a rollout until it ends, remembering every instance of the unit it saw."""

    def __init__(self, cluster: RealCluster, unit: str, rollout_id: str) -> None:
        self.cluster, self.unit, self.rollout_id = cluster, unit, rollout_id
        self.seen: dict[str, str] = {}
        """Instance id -> version, of every instance listed while watching."""
        self.most_new = 0
        """The most instances of the new version listed at once."""

    def look(self) -> Any:
        found = _instances(self.cluster, self.unit)
        self.seen.update({i.instance_id: i.version for i in found})
        self.most_new = max(self.most_new, sum(i.version == NEW for i in found))
        with leading(self.cluster) as admin:
            return admin.GetRollout(admin_pb2.GetRolloutRequest(
                apartment=APARTMENT, unit=self.unit, rollout_id=self.rollout_id), timeout=5)

    def ended(self, phase: str = "promoted", timeout: float = 150.0) -> Any:
        """The rollout once it has ended; AssertionError unless it ended in ``phase``."""
        def done() -> Any:
            info = self.look()
            assert info.phase in ENDED, info.phase
            return info

        info = eventually(done, timeout=timeout, interval=0.3,
                          message=f"rollout {self.rollout_id} ended")
        assert info.phase == phase, (info.phase, info.reason, info.steps)
        return info

    def new_ids(self) -> set[str]:
        return {iid for iid, version in self.seen.items() if version == NEW}


def _first_green(answers: list[Any]) -> dict[str, float]:
    """Host address -> when it first answered from the new version."""
    first: dict[str, float] = {}
    for a in answers:
        if a.version == NEW:
            first.setdefault(a.host, a.at)
    return first


def test_blue_green_switches_at_once_with_zero_failed_requests(cluster: RealCluster) -> None:
    port = _first_deploy(cluster, "bg")
    load = Load(port).start()
    try:
        start = time.monotonic()
        request = _blue_green("bg", cleanup_s=8.0)
        request.blue_green.checks.add().http.CopyFrom(types_pb2.HttpCheck(
            path="/healthz", expect_status=200, expect_body_contains='"ok"'))
        watch = Watch(cluster, "bg", _deploy(cluster, request))
        # Every host switches, while blue still runs (the cleanup delay keeps it).
        eventually(lambda: len(_first_green(load.since(start))) == 3, timeout=120,
                   interval=0.2, message="every entry point answers from green")
        blue_running = sum(i.version == OLD and i.state == RUNNING
                           for i in _instances(cluster, "bg"))
        info = watch.ended()
        eventually(lambda: _only(cluster, "bg", NEW), timeout=90, interval=0.5)
        settle = load.settled()
        answers = load.since(start)
    finally:
        load.close()
    assert blue_running == 3, "blue was removed before every host had switched"
    assert [s.target_percent for s in info.steps] == [100]
    assert info.strategy == types_pb2.STRATEGY_BLUE_GREEN and info.from_version == OLD
    assert not failed(answers), failed(answers)[:10]
    assert {a.version for a in answers} == {OLD, NEW}
    # HAProxy takes a host's new weights in one batch of runtime commands; half a second
    # after its first answer from green, none comes from blue any more.
    first = _first_green(answers)
    late_blue = [a for a in answers if a.version == OLD and a.at > first[a.host] + 0.5]
    assert not late_blue, late_blue[:10]
    after = load.since(settle)
    assert {a.version for a in after} == {NEW} and {a.host for a in after} == set(HOSTS.values())


@pytest.mark.parametrize("failure", ["integration", "performance"])
def test_green_that_fails_validation_never_gets_traffic(cluster: RealCluster,
                                                        failure: str) -> None:
    unit = f"invalid-{failure}"
    slow = {"LATENCY_MS": "300"} if failure == "performance" else {}
    port = _first_deploy(cluster, unit, new_env=slow)
    blue = {i.instance_id: i for i in _only(cluster, unit, OLD)}
    blue_containers = {iid: c.id for iid, c in _containers(unit).items()}
    request = _blue_green(unit)
    if failure == "integration":
        request.blue_green.checks.add().http.CopyFrom(types_pb2.HttpCheck(
            path="/healthz", expect_status=200, expect_body_contains="maintenance"))
        expected = "integration check failed: GET /healthz -> 200 containing 'maintenance'"
    else:
        request.blue_green.max_latency_p95.CopyFrom(seconds(0.1))
        request.blue_green.performance_requests = 12
        expected = "latency p95"
    load = Load(port).start()
    try:
        start = time.monotonic()
        watch = Watch(cluster, unit, _deploy(cluster, request))
        info = watch.ended("failed")
        eventually(lambda: _only(cluster, unit, OLD), timeout=60, interval=0.5,
                   message="green removed")
        eventually(lambda: set(_containers(unit)) == set(blue), timeout=60, interval=0.5,
                   message="green's containers removed")
        load.settled()
        answers = load.since(start)
    finally:
        load.close()
    assert expected in info.reason, info.reason
    assert len(watch.new_ids()) == 3, watch.seen  # green ran, three instances
    assert [s for s in info.steps if s.target_percent > 0] == []
    assert {w.version: w.target_percent for w in info.split} == {OLD: 100.0}
    # Not one request through an entry point reached green, and none failed.
    assert len(answers) > 100 and {a.version for a in answers} == {OLD}, len(answers)
    assert not failed(answers), failed(answers)[:10]
    # Blue is untouched: the same instances in the same containers, never restarted.
    after = {i.instance_id: i for i in _only(cluster, unit, OLD)}
    assert set(after) == set(blue)
    assert all(after[i].restarts == blue[i].restarts for i in blue)
    assert {iid: c.id for iid, c in _containers(unit).items()} == blue_containers
    with leading(cluster) as admin:
        found = admin.GetUnit(admin_pb2.GetUnitRequest(apartment=APARTMENT, unit=unit),
                              timeout=5).unit
    assert found.stable_version == OLD and found.state == "running", found


def _rollouts(cluster: RealCluster, unit: str) -> list[Any]:
    with leading(cluster) as admin:
        request = admin_pb2.ListRolloutsRequest(apartment=APARTMENT, unit=unit)
        return list(admin.ListRollouts(request, timeout=5).rollouts)


def _refused(cluster: RealCluster, request: admin_pb2.DeployRequest) -> grpc.RpcError:
    with leading(cluster) as admin, pytest.raises(grpc.RpcError) as refused:
        admin.Deploy(request, timeout=30)
    return refused.value


def _stored(cluster: RealCluster, *units: str) -> dict[str, str]:
    """What etcd holds about ``units``: unit records, routes, rollouts."""
    found: dict[str, str] = {}
    for unit in units:
        for kind in ("units", "routes", "rollouts"):
            found.update(cluster.etcd.dump(f"{RealCluster.PREFIX}/{kind}/{APARTMENT}/{unit}"))
    return found


def test_missing_dependency_is_refused_and_nothing_is_written(cluster: RealCluster) -> None:
    db_port, port, lonely_port = free_ports(3)
    deps = ["db@^1.0.0"]
    with leading(cluster) as admin:
        publish(admin, unit_spec(APARTMENT, "db", OLD, db_port), OLD,
                types_pb2.ChangeSet(features=["first"]))
        publish(admin, unit_spec(APARTMENT, "needy", OLD, port), OLD,
                types_pb2.ChangeSet(features=["first"]))
        publish(admin, unit_spec(APARTMENT, "needy", NEW, port, dependencies=deps), NEW,
                types_pb2.ChangeSet(features=["needs db"]))
        publish(admin, unit_spec(APARTMENT, "lonely", OLD, lonely_port, dependencies=deps),
                OLD, types_pb2.ChangeSet(features=["first"]))
        first = admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit="needy",
                                                     version=OLD, building="demo",
                                                     replicas=1), timeout=30).rollout
    Watch(cluster, "needy", first.rollout_id).ended()  # a first deploy is a rollout too
    before = (_rollouts(cluster, "needy"), _stored(cluster, "needy", "lonely"))
    assert len(before[0]) == 1 and before[0][0].to_version == OLD

    # A rollout of a running unit (admission) and a first deploy: both refused.
    refusals = [
        _refused(cluster, admin_pb2.DeployRequest(
            apartment=APARTMENT, unit="needy", version=NEW, building="demo", replicas=1,
            strategy=types_pb2.STRATEGY_CANARY)),
        _refused(cluster, admin_pb2.DeployRequest(apartment=APARTMENT, unit="lonely",
                                                  version=OLD, building="demo", replicas=1)),
    ]
    for error in refusals:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        assert "e2e/db" in (error.details() or ""), error.details()
    assert (_rollouts(cluster, "needy"), _stored(cluster, "needy", "lonely")) == before
    assert _rollouts(cluster, "lonely") == [] and _instances(cluster, "lonely") == []
    with leading(cluster) as admin:
        needy = admin.GetUnit(admin_pb2.GetUnitRequest(apartment=APARTMENT, unit="needy"),
                              timeout=5).unit
    assert needy.stable_version == OLD and needy.state == "running", needy

    # Once db runs, the same rollout is admitted.
    with leading(cluster) as admin:
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit="db", version=OLD,
                                             building="demo", replicas=1), timeout=30)
    eventually(lambda: [i.state for i in _instances(cluster, "db")] == [RUNNING], timeout=90,
               interval=0.5, message="db running")
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit="needy", version=NEW,
                                      building="demo", replicas=1,
                                      strategy=types_pb2.STRATEGY_BLUE_GREEN)
    request.blue_green.warmup.CopyFrom(seconds(0.5))
    request.blue_green.cleanup_delay.CopyFrom(seconds(0.5))
    info = Watch(cluster, "needy", _deploy(cluster, request)).ended()
    assert info.to_version == NEW


@pytest.mark.parametrize("mode", ["shared", "snapshot"])
def test_state_counter_continues_from_blue_to_green(cluster: RealCluster, mode: str) -> None:
    unit = f"counter-{mode}"
    state_mode = {"shared": types_pb2.STATE_MODE_SHARED,
                  "snapshot": types_pb2.STATE_MODE_SNAPSHOT}[mode]
    _first_deploy(cluster, unit, state_mode=state_mode)
    counts: dict[str, int] = {}
    for extra, inst in enumerate(sorted(_only(cluster, unit, OLD), key=lambda i: i.host_id)):
        base = _get(inst.address, inst.port, "/state")["count"]  # from the serving check
        for _ in range(5 + extra):  # a different count on every host
            assert _get(inst.address, inst.port)["version"] == OLD
        counts[inst.host_id] = _get(inst.address, inst.port, "/state")["count"]
        assert counts[inst.host_id] == base + 5 + extra, (inst.host_id, base, counts)

    info = Watch(cluster, unit, _deploy(cluster, _blue_green(unit))).ended()
    assert info.to_version == NEW
    green = eventually(lambda: _only(cluster, unit, NEW), timeout=90, interval=0.5,
                       message="only green left")
    for inst in green:
        state = _get(inst.address, inst.port, "/state")
        assert (state["version"], state["count"]) == (NEW, counts[inst.host_id]), state
        answer = _get(inst.address, inst.port)
        assert answer["count"] == counts[inst.host_id] + 1, (inst.host_id, answer)


def test_leader_killed_mid_canary_the_follower_finishes_it(cluster: RealCluster) -> None:
    port = _first_deploy(cluster, "relay")
    leader = cluster.leader()
    [follower] = [c for c in cluster.coordinators if c is not leader]
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit="relay", version=NEW,
                                      building="demo", replicas=3,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend([25, 50, 100])
    request.canary.monitor.CopyFrom(seconds(4))
    request.canary.step_delay.CopyFrom(seconds(1))
    request.canary.inconclusive_deadline.CopyFrom(seconds(40))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 20
    load = Load(port).start()
    try:
        start = time.monotonic()
        watch = Watch(cluster, "relay", _deploy(cluster, request))

        def mid_canary() -> Any:
            info = watch.look()
            assert info.phase == "switching" and info.steps, info.phase
            assert info.steps[0].outcome == "passed", info.steps[0]
            return info

        before = eventually(mid_canary, timeout=120, interval=0.2, message="step 1 passed")
        leader.kill()
        assert cluster.leader(timeout=30) is follower
        info = watch.ended()
        final = eventually(lambda: _only(cluster, "relay", NEW), timeout=90, interval=0.5)
        settle = load.settled()
        answers = load.since(start)
    finally:
        load.close()
        leader.start()  # back as a follower
    assert before.phase == "switching" and before.current_step < 2
    assert [s.target_percent for s in info.steps] == [25, 50, 100]
    assert all(s.outcome == "passed" for s in info.steps), info.steps
    log = follower.log_path.read_text(errors="replace")
    assert f"rollout {watch.rollout_id}: resuming" in log
    # Neither lost nor duplicated: the three canary instances placed before the failover
    # are the ones that run now, one per host, each in its first container.
    assert watch.new_ids() == {i.instance_id for i in final} and watch.most_new == 3
    running = _containers("relay")
    assert set(running) == watch.new_ids()
    assert all(c.labels["landlord.generation"] == "1" for c in running.values())
    assert not failed(answers), failed(answers)[:10]
    after = load.since(settle)
    assert {a.version for a in after} == {NEW} and {a.host for a in after} == set(HOSTS.values())
