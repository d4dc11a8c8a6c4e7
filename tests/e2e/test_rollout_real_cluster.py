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

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import duration_pb2

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, free_port_on_all
from tests.integration.agent.agent_fixtures import ensure_demo_images
from tests.support import eventually

HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}
APARTMENT, UNIT = "e2e", "shop"
RUNNING = types_pb2.INSTANCE_STATE_RUNNING

pytestmark = pytest.mark.timeout(300)


def _seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


@dataclass
class Answer:
    at: float
    host: str
    status: int
    """HTTP status, or 0 when the request got no HTTP answer at all."""
    version: str


@dataclass
class Load:
    """One client thread per host entry point, bounded in time; records every answer."""

    port: int
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, max_seconds: float = 240.0) -> None:
        deadline = time.monotonic() + max_seconds
        for address in HOSTS.values():
            t = threading.Thread(target=self._run, args=(address, deadline), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, address: str, deadline: float) -> None:
        while not self.stop.is_set() and time.monotonic() < deadline:
            status, version = self._once(address)
            self.answers.append(Answer(time.monotonic(), address, status, version))
            time.sleep(0.01)

    def _once(self, address: str) -> tuple[int, str]:
        """One GET / on a fresh connection, closed whatever happens."""
        conn = http.client.HTTPConnection(address, self.port, timeout=10)
        try:
            conn.request("GET", "/")
            reply = conn.getresponse()
            body = reply.read()
            try:
                version = str(json.loads(body).get("version", ""))
            except ValueError:
                version = ""
            return reply.status, version
        except (OSError, http.client.HTTPException):
            return 0, ""
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def since(self, start: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= start]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    ensure_demo_images()
    real = RealCluster({"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 3.0})
    try:
        real.start()
        for host_id, address in HOSTS.items():
            real.add_agent(host_id, address, "demo")
        yield real
    except BaseException:
        print(real.logs())
        raise
    finally:
        real.close()


def _publish(admin: Any, version: str, port: int, env: dict[str, str],
             changes: types_pb2.ChangeSet) -> None:
    spec = types_pb2.UnitSpec(
        apartment=APARTMENT, unit=UNIT, image=f"landlord/demo-app:{version}", port=0,
        service_port=port, env=env,
        health=types_pb2.HealthCheck(path="/healthz", interval=_seconds(1), timeout=_seconds(1),
                                     healthy_threshold=1, unhealthy_threshold=2),
        resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20),
    )
    admin.PublishVersion(admin_pb2.PublishVersionRequest(spec=spec, version=version,
                                                         changes=changes), timeout=30)


def _instances(cluster: RealCluster) -> list[Any]:
    with cluster.admin() as admin:
        request = admin_pb2.ListInstancesRequest(apartment=APARTMENT, unit=UNIT)
        return list(admin.ListInstances(request, timeout=5).instances)


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
    request.canary.monitor.CopyFrom(_seconds(4))
    request.canary.step_delay.CopyFrom(_seconds(1))
    request.canary.inconclusive_deadline.CopyFrom(_seconds(30))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 20
    return request


def _ended(cluster: RealCluster, rollout_id: str, phases: set[str]) -> Any:
    info = _rollout(cluster)
    assert info.rollout_id == rollout_id and info.phase in phases, (info.phase, info.reason)
    return info


@pytest.fixture(scope="module")
def load(cluster: RealCluster) -> Iterator[Load]:
    eventually(lambda: len([h for h in _hosts(cluster) if h.status == "alive"]) == 3,
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

    def serving() -> bool:
        for address in HOSTS.values():
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as reply:
                assert reply.status == 200
        return True

    eventually(serving, timeout=60, interval=0.5, message="every entry point serves")
    running = Load(port)
    running.start()
    yield running
    running.close()


def _hosts(cluster: RealCluster) -> list[Any]:
    with cluster.admin() as admin:
        return list(admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5).hosts)


def _failed(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != 200]


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
    settle = time.monotonic()
    eventually(lambda: len(load.since(settle)) >= 60, timeout=30)
    answers = load.since(start)
    assert len(answers) > 300, len(answers)
    assert not _failed(answers), _failed(answers)[:10]
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
    settle = time.monotonic()
    eventually(lambda: len(load.since(settle)) >= 60, timeout=30)
    answers = load.since(start)
    failed = _failed(answers)
    # Failures caused by switching (no answer, or a 5xx not from 2.0.0): none.
    assert not [a for a in failed if a.version != "2.0.0"], failed[:10]
    assert failed, "2.0.0 answered some 500s while it had its canary share"
    after = load.since(settle)
    assert {a.version for a in after} == {"1.1.0"} and not _failed(after)
    assert {a.host for a in after} == set(HOSTS.values())
