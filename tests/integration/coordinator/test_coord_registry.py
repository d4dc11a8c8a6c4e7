"""Units and versions over the admin API of an in-process coordinator on a real etcd."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from coordinator.app import Coordinator
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.support import async_eventually


def publish(
    unit: str,
    version: str,
    deps: tuple[str, ...] = (),
    features: bool = True,
    image: str = "demo:1",
    service_port: int = 18080,
) -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(
            apartment="shop",
            unit=unit,
            image=image,
            port=8080,
            service_port=service_port,
            dependencies=list(deps),
            resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20),
        ),
        version=version,
        changes=types_pb2.ChangeSet(features=["f"] if features else [], fixes=["x"]),
    )


async def with_host(coordinator: Coordinator, admin: Any) -> Any:
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2")
    await async_eventually(lambda: _hosts(admin), timeout=10)
    return agent


async def _hosts(admin: Any) -> bool:
    return bool((await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts)


async def test_publish_list_show_and_idempotent_repeat(
    coordinator: Coordinator, admin: Any
) -> None:
    agent = await with_host(coordinator, admin)
    try:
        first = await admin.PublishVersion(publish("web", "1.0.0"))
        assert not first.already_published and len(first.version.checksum) == 64
        again = await admin.PublishVersion(publish("web", "1.0.0"))
        assert again.already_published and again.version.checksum == first.version.checksum
        assert again.version.spec.service_port == 18080
        with pytest.raises(grpc.aio.AioRpcError) as moved:
            await admin.PublishVersion(publish("web", "1.0.0", service_port=18081))
        assert moved.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "already published with different content" in (moved.value.details() or "")
        await admin.PublishVersion(publish("web", "1.1.0"))
        versions = await admin.ListVersions(
            admin_pb2.ListVersionsRequest(apartment="shop", unit="web")
        )
        assert [v.version for v in versions.versions] == ["1.0.0", "1.1.0"]
        unit = await admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="web"))
        assert unit.unit.latest_version == "1.1.0" and unit.latest.version == "1.1.0"
        assert unit.latest.spec.resources.memory_bytes == 64 << 20
        units = await admin.ListUnits(admin_pb2.ListUnitsRequest(apartment="shop"))
        assert [u.unit for u in units.units] == ["web"]
        assert not (await admin.ListUnits(admin_pb2.ListUnitsRequest(apartment="x"))).units
    finally:
        await agent.stop()


async def test_dependencies_resolve_to_the_highest_and_cycles_are_refused(
    coordinator: Coordinator, admin: Any
) -> None:
    agent = await with_host(coordinator, admin)
    try:
        await admin.PublishVersion(publish("db", "1.0.0"))
        await admin.PublishVersion(publish("db", "1.2.0"))
        await admin.PublishVersion(publish("db", "2.0.0"))
        await admin.PublishVersion(publish("api", "1.0.0", deps=("db@^1.0.0",)))
        await admin.PublishVersion(publish("web", "1.0.0", deps=("api@~1.0",)))
        resolved = await admin.ResolveDependencies(
            admin_pb2.ResolveDependenciesRequest(apartment="shop", unit="web", version="1.0.0")
        )
        assert {(d.unit, d.range, d.version, d.required_by) for d in resolved.resolved} == {
            ("shop/api", "~1.0", "1.0.0", "shop/web"),
            ("shop/db", "^1.0.0", "1.2.0", "shop/api"),
        }
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.PublishVersion(publish("db", "3.0.0", deps=("web@^1.0.0",)))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "shop/db -> shop/web -> shop/api -> shop/db" in (refused.value.details() or "")
    finally:
        await agent.stop()


async def test_events_are_kept_bounded_and_streamed_live(etcd: EtcdProcess, prefix: str) -> None:
    coordinator = Coordinator(coordinator_config(etcd, prefix, event_history=10))
    await coordinator.start()
    channel = grpc.aio.insecure_channel(coordinator.config.listen)
    admin = admin_pb2_grpc.AdminStub(channel)
    agent = None
    try:
        await async_eventually(_leads(coordinator), timeout=10)
        agent = await with_host(coordinator, admin)
        live = admin.StreamEvents(admin_pb2.StreamEventsRequest(apartment="shop", follow=True))
        for minor in range(12):
            await admin.PublishVersion(publish("web", f"1.{minor}.0"))
        received: list[str] = []
        async with asyncio.timeout(10):
            async for event in live:
                if event.type == EventType.AUDIT:  # each publish is audited too
                    continue
                received.append(event.version)
                if len(received) == 12:
                    break
        live.cancel()
        assert received == [f"1.{m}.0" for m in range(12)]
        trimmed = await coordinator.events.trim()
        assert trimmed >= 2

        async def trimmed_to_capacity() -> bool:
            # audit events of the publishes are written in the background and may land
            # after a trim: trim again until the history holds its capacity
            await coordinator.events.trim()
            return await _history_size(admin, 10)

        await async_eventually(trimmed_to_capacity, timeout=5)
        history = [e async for e in admin.StreamEvents(admin_pb2.StreamEventsRequest())]
        assert [e.sequence for e in history] == sorted(e.sequence for e in history)
        after = [
            e
            async for e in admin.StreamEvents(
                admin_pb2.StreamEventsRequest(after_sequence=history[-2].sequence)
            )
        ]
        assert [e.sequence for e in after] == [history[-1].sequence]
    finally:
        if agent is not None:
            await agent.stop()
        await channel.close()
        await coordinator.stop()


async def _history_size(admin: Any, size: int) -> bool:
    return len([e async for e in admin.StreamEvents(admin_pb2.StreamEventsRequest())]) <= size


def _leads(coordinator: Coordinator):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return coordinator.leadership.is_leader

    return check


async def test_a_follower_answers_reads_from_its_cache(
    coordinator: Coordinator, admin: Any, etcd: EtcdProcess, prefix: str
) -> None:
    agent = await with_host(coordinator, admin)
    follower = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await follower.start()
    channel = grpc.aio.insecure_channel(follower.config.listen)
    try:
        await admin.PublishVersion(publish("web", "1.0.0"))
        other = admin_pb2_grpc.AdminStub(channel)
        found = await async_eventually(lambda: _versions(other), timeout=5)
        assert found == ["1.0.0"]
        leader = await other.GetLeader(admin_pb2.GetLeaderRequest())
        assert leader.leader_id == "c1" and not leader.this_is_leader
        hosts = (await other.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert [(h.host_id, h.status) for h in hosts] == [("h1", "alive")]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await other.PublishVersion(publish("web", "1.1.0"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(refused.value.trailing_metadata() or ())
        assert trailers["x-leader"] == coordinator.config.listen
    finally:
        await agent.stop()
        await channel.close()
        await follower.stop()


async def _versions(admin: Any) -> list[str]:
    reply = await admin.ListVersions(admin_pb2.ListVersionsRequest(apartment="shop", unit="web"))
    return [v.version for v in reply.versions]
