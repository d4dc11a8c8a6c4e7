"""Publishing resolves an image tag to its digest through a real Distribution registry.

Throwaway ``docker-registry`` processes (tests/support/registry.py) on free loopback ports:
one plain, one with htpasswd (Basic) credentials; the demo images are pushed to them.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from local_cluster.processes import free_port

from common.errors import FailedPrecondition, NotFound, Unavailable
from common.gen.landlord.v1 import admin_pb2
from common.image_refs import parse_image_ref
from coordinator.app import Coordinator
from coordinator.images_client import RegistryClient
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.test_coord_registry import publish, with_host
from tests.support import async_eventually
from tests.support.registry import LocalRegistry, throwaway_registry, token_service

REPO = Path(__file__).resolve().parents[3]
V1, V2 = "landlord/demo-app:1.0.0", "landlord/demo-app:1.1.0"


@pytest.fixture(scope="module")
def demo_images() -> None:
    subprocess.run([str(REPO / "scripts" / "build-demo-image.sh"), "--no-push", "1.0.0",
                    "1.1.0"], check=True, timeout=1800)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory,
             demo_images: None) -> Iterator[LocalRegistry]:
    with throwaway_registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory,
           demo_images: None) -> Iterator[LocalRegistry]:
    with throwaway_registry(tmp_path_factory.mktemp("locked"),
                            users={"landlord": "s3cret"}) as r:
        yield r


async def test_publish_records_the_digest_and_agents_get_name_at_digest(
    coordinator: Coordinator, admin: Any, registry: LocalRegistry
) -> None:
    digest = registry.push(V1, "team/app", "1.0.0")
    image = f"{registry.address}/team/app:1.0.0"
    agent = await with_host(coordinator, admin)
    try:
        first = await admin.PublishVersion(publish("app", "1.0.0", image=image))
        assert first.version.image_digest == digest
        assert first.version.image_id == f"{registry.address}/team/app@{digest}"
        assert first.version.spec.image == image  # as published
        again = await admin.PublishVersion(publish("app", "1.0.0", image=image))
        assert again.already_published and again.version.checksum == first.version.checksum
        listed = await admin.ListVersions(admin_pb2.ListVersionsRequest(apartment="shop",
                                                                        unit="app"))
        assert [v.image_digest for v in listed.versions] == [digest]
        shown = await admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="app"))
        assert shown.latest.image_digest == digest
        record = coordinator.registry.version("shop", "app", "1.0.0")
        assert record.tag.spec.run_image == f"{registry.address}/team/app@{digest}"

        # the tag moves: the same version again is a changed spec, both digests named
        moved = registry.push(V2, "team/app", "1.0.0")
        assert moved != digest
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.PublishVersion(publish("app", "1.0.0", image=image))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        details = refused.value.details() or ""
        assert digest in details and moved in details
        record = coordinator.registry.version("shop", "app", "1.0.0")
        assert record.tag.spec.image_digest == digest  # unchanged
    finally:
        await agent.stop()


async def test_a_pinned_reference_is_checked_to_exist(
    coordinator: Coordinator, admin: Any, registry: LocalRegistry
) -> None:
    digest = registry.push(V1, "team/pinned", "1.0.0")
    image = f"{registry.address}/team/pinned:1.0.0@{digest}"
    published = await admin.PublishVersion(publish("pinned", "1.0.0", image=image))
    assert published.version.image_digest == digest
    assert published.version.image_id == f"{registry.address}/team/pinned@{digest}"
    absent = "sha256:" + "0" * 64
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.PublishVersion(publish("pinned", "1.1.0",
                                           image=f"{registry.address}/team/pinned@{absent}"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert absent in (missing.value.details() or "")


async def test_registry_errors_are_clear_and_write_nothing(
    coordinator: Coordinator, admin: Any, registry: LocalRegistry
) -> None:
    image = f"{registry.address}/team/nothing:9.9.9"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.PublishVersion(publish("nothing", "1.0.0", image=image))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    details = missing.value.details() or ""
    assert image in details and registry.address in details and "manifest unknown" in details

    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(grpc.aio.AioRpcError) as unreachable:
        await admin.PublishVersion(publish("nothing", "1.0.0", image=f"{closed}/team/x:1"))
    assert unreachable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert closed in (unreachable.value.details() or "")
    assert "unreachable" in (unreachable.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="nothing"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was written


async def test_a_bare_local_name_is_still_checked_against_the_hosts(
    coordinator: Coordinator, admin: Any
) -> None:
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2",
                        images=("landlord/demo-app:1.0.0",))
    try:
        async def hosts() -> bool:
            return bool((await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts)

        await async_eventually(hosts, timeout=10)
        local = await admin.PublishVersion(publish("local", "1.0.0", image=V1))
        assert local.version.image_digest == "" and local.version.image_id == V1
        with pytest.raises(grpc.aio.AioRpcError) as absent:
            await admin.PublishVersion(publish("local", "1.1.0", image="landlord/absent:1"))
        assert absent.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not present on any registered host" in (absent.value.details() or "")
    finally:
        await agent.stop()


async def test_basic_credentials_from_the_auth_file(locked: LocalRegistry,
                                                    tmp_path: Path) -> None:
    digest = locked.push(V1, "team/secret", "1.0.0")
    ref = parse_image_ref(f"{locked.address}/team/secret:1.0.0")
    with pytest.raises(FailedPrecondition, match="requires credentials"):
        await RegistryClient().resolve(ref)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(
        {"auths": {locked.address: {"username": "landlord", "password": "nope"}}}))
    with pytest.raises(FailedPrecondition, match="refused access"):
        await RegistryClient.from_settings(auth_file=str(wrong), ca_file="",
                                           http=()).resolve(ref)
    good = locked.auth_file(tmp_path / "config.json")
    client = RegistryClient.from_settings(auth_file=str(good), ca_file="", http=())
    assert await client.resolve(ref) == digest
    with pytest.raises(NotFound, match=r"no tag '2\.0\.0'"):
        await client.resolve(parse_image_ref(f"{locked.address}/team/secret:2.0.0"))


async def test_an_unreachable_registry_times_out_as_unavailable() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        client = RegistryClient(timeout_s=0.5)
        with pytest.raises(Unavailable, match="unreachable"):
            await client.resolve(parse_image_ref(f"{address}/app:1"))


async def test_bearer_tokens_asked_with_the_auth_file_credentials(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    digest = registry.push(V1, "team/bearer", "1.0.0")  # through the plain registry
    with token_service(tmp_path / "token", {"landlord": "s3cret"}) as tokens, \
            throwaway_registry(tmp_path / "bearer", storage=registry.root / "storage",
                               auth=tokens.registry_config()) as bearer:
        ref = parse_image_ref(f"{bearer.address}/team/bearer:1.0.0")
        with pytest.raises(FailedPrecondition, match="refused anonymous access"):
            await RegistryClient().resolve(ref)
        auth_file = tmp_path / "config.json"
        auth_file.write_text(json.dumps(
            {"auths": {bearer.address: {"username": "landlord", "password": "s3cret"}}}))
        client = RegistryClient.from_settings(auth_file=str(auth_file), ca_file="", http=())
        assert await client.resolve(ref) == digest
        assert tokens.requests[-1] == ("landlord", "repository:team/bearer:pull")
        with pytest.raises(NotFound, match="manifest unknown"):
            await client.resolve(parse_image_ref(f"{bearer.address}/team/bearer:9.9.9"))
        auth_file.write_text(json.dumps(
            {"auths": {bearer.address: {"username": "landlord", "password": "wrong"}}}))
        wrong = RegistryClient.from_settings(auth_file=str(auth_file), ca_file="", http=())
        with pytest.raises(FailedPrecondition, match="bad credentials"):
            await wrong.resolve(ref)


async def test_tls_registries_are_trusted_through_registry_ca_file(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    digest = registry.push(V1, "team/tls", "1.0.0")  # through the plain registry
    with throwaway_registry(tmp_path / "tls", storage=registry.root / "storage",
                            tls=True) as secure:
        ref = parse_image_ref(f"{secure.address}/team/tls:1.0.0")
        with pytest.raises(FailedPrecondition, match="set registry_ca_file"):
            await RegistryClient().resolve(ref)
        trusting = RegistryClient(ca_file=str(secure.root / "tls.pem"))
        assert await trusting.resolve(ref) == digest
