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

import grpc
import pytest
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, publish
from tests.e2e.two_host_rollouts import (
    APARTMENT,
    alive_cluster,
    canary,
    rollout,
    run_first,
    spec,
    stable_version,
)
from tests.support import eventually

HOSTS = {host_id("sb1"): "127.0.0.141", host_id("sb2"): "127.0.0.142"}
LINES = "sbline"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with alive_cluster(HOSTS) as real:
        yield real


def _port() -> int:
    return free_port_on_all(list(HOSTS.values()))


def test_a_backport_is_published_after_a_newer_major_and_deployed(cluster: RealCluster) -> None:
    port = _port()
    with cluster.admin() as admin:
        publish(admin, spec(LINES, "1.2.0", port), "1.2.0", types_pb2.ChangeSet())
        publish(admin, spec(LINES, "2.0.0", port), "2.0.0",
                types_pb2.ChangeSet(breaking=["v2 API"]))
        run_first(admin, LINES, "2.0.0", port, HOSTS)
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

