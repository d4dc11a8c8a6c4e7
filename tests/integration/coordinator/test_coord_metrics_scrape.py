"""A coordinator's /metrics endpoint, scraped over HTTP: leadership, the fleet its agents
report, the rollout of a first deploy, admin calls by method and status, etcd requests;
and its gRPC health, which follows etcd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from local_cluster.etcd import EtcdProcess

from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.app import Coordinator
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_stream import check, deploy, running
from tests.support import async_eventually
from tests.support.prometheus import Scrape, scrape

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def url(coordinator: Coordinator) -> str:
    assert coordinator.metrics_server is not None
    return f"http://127.0.0.1:{coordinator.metrics_server.port}/metrics"


async def test_the_leader_shows_its_fleet_rollouts_and_admin_calls(
        coordinator: Coordinator, admin: Any) -> None:
    agents = [start_agent([coordinator.config.listen], f"h{n}", f"127.0.0.{n + 1}")
              for n in (1, 2)]
    try:
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10)
        await deploy(admin, replicas=2)
        await async_eventually(lambda: running(admin, 2), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="nope"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        await admin.PublishVersion(admin_pb2.PublishVersionRequest(
            spec=types_pb2.UnitSpec(apartment="shop", unit="big", image="demo:1",
                                    service_port=9000,
                                    resources=types_pb2.Resources(cpu_millis=64_000)),
            version="1.0.0", changes=types_pb2.ChangeSet(features=["f"])))
        with pytest.raises(grpc.aio.AioRpcError) as no_room:
            await admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit="big",
                                                       version="1.0.0", replicas=1))
        assert no_room.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        async def settled() -> Scrape | None:
            found = await scrape(url(coordinator))
            done = found.value("landlord_rollouts", phase="promoted") == 1.0 and found.value(
                "landlord_instances", apartment="shop", unit="web", version="1.0.0",
                state="running") == 2.0
            return found if done else None

        found = await async_eventually(settled, timeout=10)
        assert found is not None
        metrics = found
        watched = [info async for info in admin.WatchRollout(
            admin_pb2.GetRolloutRequest(apartment="shop", unit="web"))]
        assert watched  # the promoted rollout, then the stream ends
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            async for _ in admin.WatchRollout(
                    admin_pb2.GetRolloutRequest(apartment="shop", unit="nope")):
                pass
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        streams = await scrape(url(coordinator))
    finally:
        for agent in agents:
            await agent.stop()
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    assert metrics.value("landlord_coordinator_leader") == 1.0
    assert metrics.value("landlord_coordinator_info", coordinator="c1",
                         release=coordinator.metrics.release) == 1.0
    assert metrics.value("landlord_agents_connected") == 2.0
    assert metrics.value("landlord_hosts", building="default", status="alive") == 2.0
    assert metrics.value("landlord_hosts", building="default", status="lost") == 0.0
    ages = metrics.matching("landlord_agent_last_report_age_seconds")
    assert sorted(dict(key)["host"] for key in ages) == ["h1", "h2"]
    assert all(0 <= age < 5 for age in ages.values())
    assert metrics.value("landlord_rollouts", phase="switching") == 0.0
    calls = "landlord_admin_calls_total"
    assert metrics.value(calls, method="PublishVersion", code="OK") == 2.0
    assert metrics.value(calls, method="Deploy", code="RESOURCE_EXHAUSTED") == 1.0
    assert metrics.value("landlord_placement_refusals_total", resource="cpu") == 1.0
    assert metrics.value(calls, method="Deploy", code="OK") == 1.0
    assert metrics.value(calls, method="GetUnit", code="NOT_FOUND") == 1.0
    assert (metrics.value(calls, method="ListInstances", code="OK") or 0) >= 1
    assert metrics.value("landlord_admin_call_duration_seconds_count", method="Deploy") == 2.0
    assert streams.value(calls, method="WatchRollout", code="OK") == 1.0
    assert streams.value(calls, method="WatchRollout", code="NOT_FOUND") == 1.0
    commits = metrics.value("landlord_etcd_request_duration_seconds_count", operation="commit")
    assert commits is not None and commits > 0
    assert metrics.value("landlord_etcd_request_failures_total", operation="commit") is None


async def test_a_follower_says_it_does_not_lead(coordinator: Coordinator, etcd: EtcdProcess,
                                                prefix: str) -> None:
    follower = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await follower.start()
    try:
        metrics = await scrape(url(follower))
        assert metrics.value("landlord_coordinator_leader") == 0.0
        assert metrics.value("landlord_agents_connected") == 0.0
        leader = await scrape(url(coordinator))
        assert leader.value("landlord_coordinator_leader") == 1.0
    finally:
        await follower.stop()


async def test_grpc_health_follows_etcd(tmp_path: Path) -> None:
    etcd = EtcdProcess(tmp_path).start()
    coordinator = Coordinator(coordinator_config(etcd, "/health", etcd_timeout=1.0))
    await coordinator.start()
    try:
        async with grpc.aio.insecure_channel(coordinator.config.listen) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status(wanted: int) -> Any:
                async def check() -> bool:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(
                        service="landlord.v1.Admin"))
                    return bool(reply.status == wanted)
                return check

            await async_eventually(status(SERVING), timeout=10)
            etcd.stop()
            await async_eventually(status(NOT_SERVING), timeout=15, interval=0.2)
            etcd.start()
            await async_eventually(status(SERVING), timeout=15, interval=0.2)
    finally:
        await coordinator.stop()
        etcd.stop()
