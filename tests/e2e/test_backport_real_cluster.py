"""Release lines on a real two-host cluster under load.

etcd, a coordinator and two `landlord-agent`s (Docker + HAProxy on 127.0.0.141-142) run as
processes; every version runs the demo app image 1.0.0 with its own ``VERSION``.
e2e/sbline publishes 1.2.0 and 2.0.0 and runs 2.0.0; the backport 1.2.1 is published after
it (a fix on the 1.2 line), 1.2.1-rc.1 is refused naming the 1.2.x line, and a canary to
1.2.1 completes under load with 0 failed requests; ``rollback`` then goes back to 2.0.0,
the version stable before it, though it is on another line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.images import demo_image
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, list_hosts, publish, real_cluster, seconds, serving, unit_spec
from tests.support import eventually

HOSTS = {host_id("sb1"): "127.0.0.141", host_id("sb2"): "127.0.0.142"}
APARTMENT, LINES = "e2e", "sbline"
pytestmark = pytest.mark.timeout(240)


def spec(unit: str, version: str, port: int) -> types_pb2.UnitSpec:
    """The demo app (image 1.0.0) answering as ``version``."""
    found = unit_spec(APARTMENT, unit, version, port, env={"VERSION": version})
    found.image = demo_image("1.0.0")
    return found



def canary(unit: str, version: str, steps: tuple[int, ...], monitor: float = 3.0
           ) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=version,
                                      building="demo", replicas=2,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend(steps)
    request.canary.monitor.CopyFrom(seconds(monitor))
    request.canary.step_delay.CopyFrom(seconds(0.3))
    request.canary.inconclusive_deadline.CopyFrom(seconds(30))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 5
    return request


def rollout(admin: Any, unit: str) -> Any:
    """The unit's active or latest rollout (RolloutInfo)."""
    return admin.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=unit),
                            timeout=5)


def stable_version(admin: Any, unit: str) -> str:
    request = admin_pb2.GetUnitRequest(apartment=APARTMENT, unit=unit)
    return str(admin.GetUnit(request, timeout=5).unit.stable_version)



@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with real_cluster(settings={"heartbeat_interval": 2.0, "liveness_grace": 10.0,
                                "stop_grace": 2.0}, hosts=HOSTS) as real:
        eventually(lambda: _alive(real), timeout=60, interval=0.5, message="both hosts alive")
        yield real


def _alive(real: RealCluster) -> bool:
    found = list_hosts(real)
    assert len(found) == len(HOSTS) and all(h.status == "alive" for h in found), found
    return True


def run_first(admin: Any, unit: str, version: str, port: int) -> None:
    """The unit's first deploy (two instances), until every entry point serves it."""
    admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=version,
                                         building="demo", replicas=2), timeout=30)
    eventually(lambda: stable_version(admin, unit) == version, timeout=60, interval=0.5,
               message=f"{version} runs")
    eventually(lambda: serving(port, HOSTS.values()), timeout=30, interval=0.5,
               message="every entry point serves")


def _port() -> int:
    return free_port_on_all(list(HOSTS.values()))


def test_a_backport_is_published_after_a_newer_major_and_deployed(cluster: RealCluster) -> None:
    port = _port()
    with cluster.admin() as admin:
        publish(admin, spec(LINES, "1.2.0", port), "1.2.0", types_pb2.ChangeSet())
        publish(admin, spec(LINES, "2.0.0", port), "2.0.0",
                types_pb2.ChangeSet(breaking=["v2 API"]))
        run_first(admin, LINES, "2.0.0", port)
        # the backport: a fix on the 1.2 line, published after 2.0.0
        backport = publish(admin, spec(LINES, "1.2.1", port), "1.2.1",
                           types_pb2.ChangeSet(fixes=["null check"]))
        assert backport.version == "1.2.1"
        with pytest.raises(grpc.RpcError) as refused:
            publish(admin, spec(LINES, "1.2.1-rc.1", port), "1.2.1-rc.1",
                    types_pb2.ChangeSet(fixes=["late"]))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert ("1.2.1-rc.1 is refused: it must be greater than every published 1.2.x "
                "version; the highest published 1.2.x is 1.2.1") in str(refused.value.details())

        load = Load(port, addresses=HOSTS.values()).start(max_seconds=120)
        try:
            start = load.settled(40)
            admin.Deploy(canary(LINES, "1.2.1", (50, 100)), timeout=30)
            eventually(lambda: rollout(admin, LINES).phase == "promoted", timeout=90,
                       interval=0.5, message="the backport's canary is promoted")
            after = load.settled(40)
            assert load.only("1.2.1", after)
        finally:
            load.close()
        answers = load.since(start)
        assert not failed(answers), failed(answers)[:5]
        print(f"backport canary under load: {len(answers)} answers, 0 failed")
        # rollback goes to the version stable before 1.2.1, on its own line
        admin.Rollback(admin_pb2.RollbackRequest(apartment=APARTMENT, unit=LINES), timeout=30)
        eventually(lambda: stable_version(admin, LINES) == "2.0.0", timeout=60, interval=0.5,
                   message="rolled back to 2.0.0")

