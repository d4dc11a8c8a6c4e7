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
from google.protobuf import duration_pb2
from local_cluster.processes import wait_for

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.cluster import Cluster
from tests.fuzz.harness import Baseline
from tests.fuzz.messages import Hints

CI_EXAMPLES = 300
CI_STREAM_EXAMPLES = 25
HOST = "fz-h1"
"""The honest simulated host (its own id prefix: clusters on one machine stay apart)."""
ROGUE = "fz-rogue"
"""The host identity whose certificate the hostile agent streams use."""


def examples(variable: str, default: int) -> int:
    return int(os.environ.get(variable, "") or default)


def publish_request(unit: str, version: str, image: str = "demo:1",
                    **changes: list[str]) -> admin_pb2.PublishVersionRequest:
    spec = types_pb2.UnitSpec(
        apartment="shop", unit=unit, image=image, service_port=18080,
        resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20))
    return admin_pb2.PublishVersionRequest(
        spec=spec, version=version, changes=types_pb2.ChangeSet(**(changes or
                                                                    {"features": ["f"]})))


def _publish(admin: Any, unit: str, version: str, image: str = "demo:1",
             **changes: list[str]) -> None:
    admin.PublishVersion(publish_request(unit, version, image, **changes))


PUBLISHED: tuple[tuple[str, str, str, dict[str, list[str]]], ...] = (
    ("db", "1.0.0", "demo:1", {}), ("db", "1.1.0", "demo:1", {}),
    ("web", "1.0.0", "demo:1", {}), ("web", "1.1.0", "demo:1", {}),
    ("web", "2.0.0", "demo:2", {"breaking": ["api"]}))
"""The seeded versions: (unit, version, image, changes)."""
DEPLOYED = {("shop", "db"): "1.0.0", ("shop", "web"): "1.0.0"}
"""The seeded units and the version each runs (one instance)."""


def baseline() -> Baseline:
    """What the harness puts back after each accepted write: the host uncordoned, the seeded
    units running (so later requests reach past "no room" and "unit stopped")."""
    return Baseline(hosts=(HOST,), units=dict(DEPLOYED), publishes=tuple(
        publish_request(unit, version, image, **changes)
        for unit, version, image, changes in PUBLISHED))


def deploy_templates(seconds: duration_pb2.Duration) -> list[admin_pb2.DeployRequest]:
    """A Deploy of each published version of each seeded unit in each strategy's shape: the
    "deep" requests keep these references and mutate only the settings."""
    shapes = (
        admin_pb2.DeployRequest(replicas=1, strategy=types_pb2.STRATEGY_CANARY,
                                canary=types_pb2.CanarySettings(steps=[10, 50, 100],
                                                                monitor=seconds)),
        admin_pb2.DeployRequest(replicas=1, strategy=types_pb2.STRATEGY_BLUE_GREEN,
                                blue_green=types_pb2.BlueGreenSettings(
                                    gradual_steps=2, performance_requests=10, warmup=seconds,
                                    checks=[types_pb2.IntegrationCheck(
                                        http=types_pb2.HttpCheck(path="/health",
                                                                 expect_status=200))])),
        admin_pb2.DeployRequest(replicas=2, strategy=types_pb2.STRATEGY_BLUE_GREEN),
    )
    found = []
    for unit, version, _, _ in PUBLISHED:
        for shape in shapes:
            request = admin_pb2.DeployRequest(apartment="shop", unit=unit, version=version)
            request.MergeFrom(shape)
            found.append(request)
    return found


def templates() -> dict[str, tuple[Any, ...]]:
    """Valid requests the generator mutates (one or two fields at a time)."""
    seconds = duration_pb2.Duration(seconds=1)
    full = publish_request("api", "1.0.0")
    full.spec.command[:] = ["/app", "--port", "8080"]
    full.spec.env["MODE"] = "fuzz"
    full.spec.secret_env["TOKEN"] = "s3cret"
    full.spec.port = 8080
    full.spec.health.CopyFrom(types_pb2.HealthCheck(path="/health"))
    full.spec.dependencies[:] = ["db@^1.0.0"]
    requests: list[Any] = [
        full, publish_request("web", "3.0.0", breaking=["api"]),
        publish_request("db", "1.0.1", fixes=["x"]),
        *deploy_templates(seconds),
        admin_pb2.RollbackRequest(apartment="shop", unit="web", to_version="1.0.0"),
        admin_pb2.ControlRolloutRequest(apartment="shop", unit="web",
                                        action=admin_pb2.ROLLOUT_CONTROL_PROMOTE),
        admin_pb2.GetRolloutRequest(apartment="shop", unit="web"),
        admin_pb2.StreamEventsRequest(apartment="shop", unit="web"),
        admin_pb2.ListRolloutsRequest(apartment="shop", unit="web", limit=5),
        admin_pb2.RunGarbageCollectionRequest(host_id=HOST),
        admin_pb2.CordonHostRequest(host_id=HOST),
        admin_pb2.UncordonHostRequest(host_id=HOST),
        admin_pb2.ResolveDependenciesRequest(apartment="shop", unit="web"),
        admin_pb2.StopUnitRequest(apartment="shop", unit="db"),
        admin_pb2.ScaleUnitRequest(apartment="shop", unit="web", replicas=2),
        admin_pb2.DeleteUnitRequest(apartment="shop", unit="db"),
        admin_pb2.DrainHostRequest(host_id=HOST, deadline=seconds),
        admin_pb2.RebalanceUnitsRequest(apartment="shop", unit="web"),
    ]
    found: dict[str, tuple[Any, ...]] = {}
    for request in requests:
        name = request.DESCRIPTOR.full_name
        found[name] = (*found.get(name, ()), request)
    return found


def _no_active_rollout(cluster: Cluster) -> bool:
    return not cluster.etcd.dump(cluster.prefix + "/active-rollout/")


def seed(cluster: Cluster, admin: Any) -> Hints:
    """Units, versions and a rollout history to aim at; the names as hints."""
    wait_for(lambda: [h for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts
                      if h.host_id == HOST and h.status == "alive"], 20, "host registered")
    for unit, version, image, changes in PUBLISHED:
        _publish(admin, unit, version, image, **changes)
    for (_, unit), version in DEPLOYED.items():
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
        templates=templates(),
        kept={admin_pb2.DeployRequest.DESCRIPTOR.full_name:
              frozenset({"apartment", "unit", "version"})},
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
