"""Bad requests get the right status and a human message, and leave etcd exactly as it was."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from local_cluster.processes import wait_for

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.cluster import Cluster

Code = grpc.StatusCode


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.start_etcd()
    try:
        yield c
    finally:
        c.close()


def spec(
    unit: str = "web", image: str = "demo:1", memory: int = 256 << 20, deps: tuple[str, ...] = ()
) -> types_pb2.UnitSpec:
    return types_pb2.UnitSpec(
        apartment="shop",
        unit=unit,
        image=image,
        service_port=18080,
        dependencies=list(deps),
        resources=types_pb2.Resources(cpu_millis=500, memory_bytes=memory),
    )


def publish(
    unit: str = "web", version: str = "1.0.0", **kwargs: Any
) -> admin_pb2.PublishVersionRequest:
    changes = kwargs.pop("changes", types_pb2.ChangeSet(features=["x"]))
    return admin_pb2.PublishVersionRequest(
        spec=spec(unit, **kwargs), version=version, changes=changes
    )


def expect(code: grpc.StatusCode, call: Callable[[], Any], *words: str) -> str:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    error = failed.value
    assert error.code() == code, f"{error.code()} {error.details()}"
    message = error.details() or ""
    for word in words:
        assert word in message, message
    return message


def test_bad_requests_get_the_right_code_and_change_nothing(cluster: Cluster) -> None:
    cluster.add_coordinator()
    cluster.add_agent("h1", "127.0.0.2", memory_bytes=8 << 30)
    gone = cluster.add_agent("h2", "127.0.0.3", memory_bytes=8 << 30)
    with cluster.admin() as admin:
        wait_for(
            lambda: len(admin.ListHosts(admin_pb2.ListHostsRequest()).hosts) == 2, 15, "hosts"
        )
        admin.PublishVersion(publish())
        admin.PublishVersion(publish("big", memory=16 << 30))
        admin.Deploy(
            admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0", replicas=1)
        )
        gone.kill()
        # h2 is lost (and whatever it held placed again) before the snapshot is taken
        wait_for(
            lambda: (
                {h.host_id: h.status for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts}[
                    "h2"
                ]
                == "lost"
            ),
            15,
            "h2 lost",
        )
        wait_for(
            lambda: [
                i
                for i in admin.ListInstances(admin_pb2.ListInstancesRequest()).instances
                if i.host_id == "h1" and i.state == types_pb2.INSTANCE_STATE_RUNNING
            ],
            10,
            "web on h1",
        )
        time.sleep(0.5)
        before = cluster.etcd.dump(cluster.prefix + "/")

        # INVALID_ARGUMENT: malformed input
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.PublishVersion(admin_pb2.PublishVersionRequest(version="1.0.0")),
            "spec is required",
        )
        expect(Code.INVALID_ARGUMENT, lambda: admin.PublishVersion(publish(version="1.0")), "1.0")
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.PublishVersion(publish(unit="Bad Name")),
            "Bad Name",
        )
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.PublishVersion(publish("other", deps=("db@not-a-range!",))),
            "range",
        )
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.Deploy(
                admin_pb2.DeployRequest(apartment="shop", unit="big", version="1.0.0",
                                        replicas=1001)
            ),
            "replicas",
        )
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.ListRollouts(admin_pb2.ListRolloutsRequest(limit=-1)),
            "limit",
        )
        expect(
            Code.INVALID_ARGUMENT,
            lambda: admin.RunGarbageCollection(
                admin_pb2.RunGarbageCollectionRequest(gc_kinds=[types_pb2.GC_KIND_UNSPECIFIED])
            ),
            "unknown garbage collection kind 0",
        )
        # NOT_FOUND
        expect(
            Code.NOT_FOUND,
            lambda: admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="nope")),
            "nope",
        )
        for call in (
            lambda: admin.ListRollouts(admin_pb2.ListRolloutsRequest(apartment="shop",
                                                                     unit="nope")),
            lambda: admin.ControlRollout(admin_pb2.ControlRolloutRequest(
                apartment="shop", unit="nope", action=admin_pb2.ROLLOUT_CONTROL_PROMOTE)),
            lambda: admin.Rollback(admin_pb2.RollbackRequest(apartment="shop", unit="nope")),
        ):
            expect(Code.NOT_FOUND, call, "unit shop/nope does not exist")
        # a published unit that was never deployed simply has no rollouts
        assert not admin.ListRollouts(
            admin_pb2.ListRolloutsRequest(apartment="shop", unit="big")).rollouts
        # Deploying an unpublished version is a failed precondition (rollouts issue),
        # and the message names the versions that are published.
        expect(
            Code.FAILED_PRECONDITION,
            lambda: admin.Deploy(
                admin_pb2.DeployRequest(apartment="shop", unit="web", version="9.9.9")
            ),
            "9.9.9",
            "1.0.0",
        )
        expect(
            Code.NOT_FOUND,
            lambda: admin.ListVersions(
                admin_pb2.ListVersionsRequest(apartment="shop", unit="nope")
            ),
            "nope",
        )
        expect(
            Code.NOT_FOUND,
            lambda: admin.RunGarbageCollection(admin_pb2.RunGarbageCollectionRequest(host_id="h9")),
            "h9",
        )
        # ALREADY_EXISTS: a tag is immutable
        expect(
            Code.ALREADY_EXISTS,
            lambda: admin.PublishVersion(publish(memory=512 << 20)),
            "already published",
        )
        # FAILED_PRECONDITION: well-formed, but the state does not allow it
        expect(
            Code.FAILED_PRECONDITION,
            lambda: admin.PublishVersion(
                publish(version="1.0.1", changes=types_pb2.ChangeSet(breaking=["api"]))
            ),
            "Version bump too small. Required: major, Actual: patch",
        )
        expect(
            Code.FAILED_PRECONDITION,
            lambda: admin.PublishVersion(publish("other", image="missing:1")),
            "missing:1",
        )
        expect(
            Code.FAILED_PRECONDITION,
            lambda: admin.PublishVersion(publish("other", deps=("db@^1.0.0",))),
            "db",
        )
        expect(
            Code.FAILED_PRECONDITION,
            lambda: admin.Deploy(
                admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0")
            ),
            "already runs",
        )
        # RESOURCE_EXHAUSTED names the short resource
        message = expect(
            Code.RESOURCE_EXHAUSTED,
            lambda: admin.Deploy(
                admin_pb2.DeployRequest(apartment="shop", unit="big", version="1.0.0")
            ),
            "memory",
        )
        assert "cpu" not in message.split("(")[0]
        # UNAVAILABLE: the host exists but is not connected
        expect(
            Code.UNAVAILABLE,
            lambda: admin.RunGarbageCollection(admin_pb2.RunGarbageCollectionRequest(host_id="h2")),
            "h2",
        )

        after = cluster.etcd.dump(cluster.prefix + "/")
    # Nothing changed but the audit trail: one refused-call event per mutating request.
    assert {key: after[key] for key in before} == before
    added = [json.loads(after[key]) for key in sorted(set(after) - set(before))]
    assert added and all(event["type"] == "audit" for event in added), added
    assert all(not event["details"]["outcome"].startswith("OK") for event in added), added
