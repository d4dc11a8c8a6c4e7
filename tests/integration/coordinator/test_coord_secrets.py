"""Secret env over the admin API of an in-process coordinator on a real etcd: the values
are stored for the agents, and no answer carries them."""

from __future__ import annotations

from typing import Any

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.unit_spec import REDACTED
from coordinator.app import Coordinator
from tests.integration.coordinator.test_coord_registry import with_host

SECRET = "hunter2-s3cret-value"


def publish(value: str = SECRET) -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(
            apartment="shop", unit="vault", image="demo:1", port=8080,
            env={"MODE": "prod"}, secret_env={"DB_PASSWORD": value},
            resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20)),
        version="1.0.0", changes=types_pb2.ChangeSet(features=["f"]))


async def test_answers_name_secrets_but_never_show_their_values(
    coordinator: Coordinator, admin: Any
) -> None:
    agent = await with_host(coordinator, admin)
    try:
        published = await admin.PublishVersion(publish())
        again = await admin.PublishVersion(publish("another-value"))
        versions = await admin.ListVersions(
            admin_pb2.ListVersionsRequest(apartment="shop", unit="vault"))
        unit = await admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="vault"))
        for answer in (published, again, versions, unit):
            assert SECRET.encode() not in answer.SerializeToString()
        for info in (published.version, versions.versions[0], unit.latest):
            assert dict(info.spec.secret_env) == {"DB_PASSWORD": REDACTED}
            assert dict(info.spec.env) == {"MODE": "prod"}
        # a version is immutable: only a secret's value changed is the same version
        assert again.already_published
        assert again.version.checksum == published.version.checksum
        stored = coordinator.registry.version("shop", "vault", "1.0.0")  # from etcd
        assert dict(stored.tag.spec.secret_env) == {"DB_PASSWORD": SECRET}
    finally:
        await agent.stop()
