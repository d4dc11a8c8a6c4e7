"""Images from a registry, end to end: a published version runs the digest it was published
with, whatever its tag names later.

A real cluster (etcd, one `landlord-coordinator`, one `landlord-agent` on 127.0.0.2) and a
throwaway `docker-registry` (tests/support/registry.py). The demo app 1.0.0 is pushed under
a tag, the version is published (its digest recorded), then 1.1.0 is pushed under the same
tag; the deployment still runs 1.0.0, by digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest
from local_cluster.images import ensure_demo_images, local_demo_image
from local_cluster.load import http_get
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import list_instances, publish, real_cluster, unit_containers, unit_spec
from tests.support import eventually
from tests.support.registry import LocalRegistry, throwaway_registry

ADDRESS = "127.0.0.2"
APARTMENT, UNIT = "e2e", "moving"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    ensure_demo_images(("1.0.0", "1.1.0"))
    with throwaway_registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(scope="module")
def cluster(registry: LocalRegistry) -> Iterator[RealCluster]:
    with real_cluster(hosts={host_id("r1"): ADDRESS}) as real:
        yield real


def running(cluster: RealCluster) -> list[object]:
    found = list_instances(cluster, APARTMENT, UNIT)
    assert len(found) == 1 and found[0].state == types_pb2.INSTANCE_STATE_RUNNING, found
    return found


def test_a_moved_tag_still_deploys_the_digest_it_was_published_with(
    cluster: RealCluster, registry: LocalRegistry
) -> None:
    published = registry.push(local_demo_image("1.0.0"), "e2e/moving", "stable")
    image = f"{registry.address}/e2e/moving:stable"
    port = free_port_on_all([ADDRESS])
    spec = unit_spec(APARTMENT, UNIT, "1.0.0", port)
    spec.image = image
    with cluster.admin(cluster.leader()) as admin:
        eventually(lambda: [h for h in admin.ListHosts(admin_pb2.ListHostsRequest(),
                                                       timeout=5).hosts
                            if h.status == "alive"], timeout=60, message="the host alive")
        version = publish(admin, spec, "1.0.0", types_pb2.ChangeSet(features=["first"]))
        assert version.image_digest == published
        pinned = f"{registry.address}/e2e/moving@{published}"
        assert version.image_id == pinned

        moved = registry.push(local_demo_image("1.1.0"), "e2e/moving", "stable")
        assert moved != published  # the tag now names 1.1.0

        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version="1.0.0",
                                             building="demo", replicas=1), timeout=30)
    eventually(lambda: running(cluster), timeout=90, message="the instance running")

    [container] = unit_containers(UNIT)
    client = docker.from_env()
    try:
        local_v1 = client.images.get(local_demo_image("1.0.0")).id
    finally:
        client.close()
    assert container.attrs["Config"]["Image"] == pinned
    assert container.attrs["Image"] == local_v1

    def answers_v1() -> bool:
        status, body = http_get(ADDRESS, port, "/healthz")
        assert status == 200 and json.loads(body)["version"] == "1.0.0", (status, body)
        return True

    eventually(answers_v1, timeout=30, message="the entry point answers 1.0.0")
