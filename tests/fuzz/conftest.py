"""The fuzz cluster: a private etcd, one ``landlord-coordinator`` process (mutual TLS, called
as admin/operator) and one simulated host, seeded with units, versions, a finished rollout
and running instances, so near-valid requests reach the checks behind the first ones.

``FUZZ_EXAMPLES`` sets how many admin requests a run sends (CI: a bounded number; `make
fuzz`: 10,000); ``FUZZ_STREAM_EXAMPLES`` how many hostile agent streams.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from local_cluster.processes import wait_for

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.cluster import Cluster
from tests.fuzz.messages import Hints

CI_EXAMPLES = 300
CI_STREAM_EXAMPLES = 25
HOST = "fz-h1"
"""The honest simulated host (its own id prefix: clusters on one machine stay apart)."""
ROGUE = "fz-rogue"
"""The host identity whose certificate the hostile agent streams use."""


def examples(variable: str, default: int) -> int:
    return int(os.environ.get(variable, "") or default)


def _publish(admin: Any, unit: str, version: str, image: str = "demo:1",
             **changes: list[str]) -> None:
    spec = types_pb2.UnitSpec(
        apartment="shop", unit=unit, image=image, service_port=18080,
        resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20))
    admin.PublishVersion(admin_pb2.PublishVersionRequest(
        spec=spec, version=version, changes=types_pb2.ChangeSet(**(changes or
                                                                    {"features": ["f"]}))))


def _no_active_rollout(cluster: Cluster) -> bool:
    return not cluster.etcd.dump(cluster.prefix + "/active-rollout/")


def seed(cluster: Cluster, admin: Any) -> Hints:
    """Units, versions and a rollout history to aim at; the names as hints."""
    wait_for(lambda: [h for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts
                      if h.host_id == HOST and h.status == "alive"], 20, "host registered")
    _publish(admin, "db", "1.0.0")
    _publish(admin, "web", "1.0.0")
    _publish(admin, "web", "1.1.0")
    _publish(admin, "web", "2.0.0", image="demo:2", breaking=["api"])
    for unit, version in (("db", "1.0.0"), ("web", "1.0.0")):
        admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit=unit, version=version,
                                             replicas=1))
        wait_for(lambda: _no_active_rollout(cluster), 30, f"{unit} deployed")
    rollouts = admin.ListRollouts(admin_pb2.ListRolloutsRequest(apartment="shop", unit="web"))
    instances = admin.ListInstances(admin_pb2.ListInstancesRequest()).instances
    return Hints(
        apartments=("shop", "shop", "other"),
        units=("web", "db", "api"),
        versions=("1.0.0", "1.1.0", "2.0.0", "9.9.9"),
        host_ids=(HOST, ROGUE, "h9"),
        rollout_ids=(*(r.rollout_id for r in rollouts.rollouts), "r-none"),
        images=("demo:1", "demo:2", "missing:1"),
        extra={"instance_id": (*(i.instance_id for i in instances), "i-none"),
               "instance_ids": tuple(i.instance_id for i in instances)},
    )


@pytest.fixture(scope="module")
def fuzz_cluster() -> Iterator[tuple[Cluster, Hints]]:
    # the trail of 10,000 refusals must not be trimmed while refusals are checked
    cluster = Cluster(prefix="/landlord-fuzz")
    cluster.coordinator_settings["event_history"] = 1_000_000
    cluster.start_etcd()
    try:
        cluster.add_coordinator()
        cluster.add_agent(HOST, "127.0.0.2", images=("demo:1", "demo:2"))
        with cluster.admin() as admin:
            hints = seed(cluster, admin)
        yield cluster, hints
    finally:
        cluster.close()
