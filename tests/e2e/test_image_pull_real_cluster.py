"""A pull from an unreachable registry fails the rollout before traffic moves, with the
registry's error in the rollout's reason (issue 13).

Real etcd, coordinator, one agent (its own host id) with Docker and HAProxy, and a
throwaway docker-registry: e2e/pull 1.0.0 runs a local image and serves a client's load;
1.1.0 is an image that lived only in the registry, which is then stopped (and the image
removed from local Docker). Deploying 1.1.0 fails at its deploy phase with the pull's
error, and every request still goes to 1.0.0.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import (
    Load,
    failed,
    list_hosts,
    list_instances,
    publish,
    real_cluster,
    seconds,
    serving,
)
from tests.e2e.real_load import unit_spec as demo_spec
from tests.support import eventually
from tests.support.registry import LocalRegistry, throwaway_registry, unique_image

APARTMENT, UNIT = "e2e", "pull"
HOST = {host_id("pull-h1"): "127.0.0.2"}
RUNNING = types_pb2.INSTANCE_STATE_RUNNING

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with throwaway_registry() as server:
        yield server


@pytest.fixture(scope="module")
def pinned(registry: LocalRegistry) -> Iterator[str]:
    """An image pushed to the registry, by digest (publishing checks it is there)."""
    tag = f"landlord-test/pull-e2e:{uuid.uuid4().hex[:10]}"
    unique_image("landlord/demo-app:1.1.0", tag)
    try:
        yield f"{registry.address}/pull-e2e@{registry.push(tag, 'pull-e2e', '1.0.0')}"
    finally:
        client = docker.from_env()
        try:
            client.images.remove(tag)
        except docker.errors.ImageNotFound:
            pass
        finally:
            client.close()


@pytest.fixture(scope="module")
def cluster(pinned: str) -> Iterator[RealCluster]:
    with real_cluster(hosts=HOST) as real:
        yield real


def _rollout(cluster: RealCluster) -> Any:
    with cluster.admin() as admin:
        return admin.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=UNIT),
                                timeout=5)


def test_a_pull_from_an_unreachable_registry_fails_the_rollout_before_traffic_moves(
        cluster: RealCluster, registry: LocalRegistry, pinned: str) -> None:
    eventually(lambda: [h.status for h in list_hosts(cluster)] == ["alive"], timeout=60,
               message="the host registered")
    port = free_port_on_all(list(HOST.values()))
    with cluster.admin() as admin:
        publish(admin, demo_spec(APARTMENT, UNIT, "1.0.0", port), "1.0.0",
                types_pb2.ChangeSet(features=["first"]))
        spec = demo_spec(APARTMENT, UNIT, "1.1.0", port)
        spec.image = pinned
        publish(admin, spec, "1.1.0", types_pb2.ChangeSet(features=["from the registry"]))
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version="1.0.0",
                                             building="demo", replicas=1), timeout=30)
    eventually(lambda: [(i.version, i.state) for i in list_instances(
        cluster, APARTMENT, UNIT)] == [("1.0.0", RUNNING)], timeout=90, interval=0.5,
        message="1.0.0 running")

    eventually(lambda: serving(port, HOST.values()), timeout=60, interval=0.5,
               message="the entry point serves")
    registry.stop()
    registry.forget_locally(pinned)
    load = Load(port, HOST.values()).start()
    try:
        start = load.settled(count=20)
        with cluster.admin() as admin:
            request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version="1.1.0",
                                              building="demo", replicas=1,
                                              strategy=types_pb2.STRATEGY_CANARY)
            request.canary.steps.extend([50, 100])
            request.canary.monitor.CopyFrom(seconds(2))
            rollout_id = admin.Deploy(request, timeout=30).rollout.rollout_id

        def ended() -> Any:
            info = _rollout(cluster)
            assert info.rollout_id == rollout_id and info.phase == "failed", (info.phase,
                                                                              info.reason)
            return info

        info = eventually(ended, timeout=90, interval=0.5, message="rollout failed")
        failed_at = time.monotonic()
        assert "could not start" in info.reason, info.reason
        assert f"pulling {pinned} failed" in info.reason, info.reason
        assert "connection refused" in info.reason, info.reason
        split = {t.version: t.target_percent for t in info.split}
        assert split.get("1.1.0", 0) == 0, split  # no traffic moved
        eventually(lambda: len(load.since(failed_at)) >= 20, timeout=30)
        answers = load.since(start)
    finally:
        load.close()
    assert answers and not failed(answers), failed(answers)[:5]
    assert {a.version for a in answers} == {"1.0.0"}
    with cluster.admin() as admin:
        events = list(admin.StreamEvents(admin_pb2.StreamEventsRequest(
            apartment=APARTMENT, unit=UNIT), timeout=10))
    types = [e.type for e in events]
    assert "image.pull_started" in types and "image.pull_failed" in types, types
    pull_failed = next(e for e in events if e.type == "image.pull_failed")
    assert "connection refused" in pull_failed.message and pull_failed.details["image"] == \
        pinned
