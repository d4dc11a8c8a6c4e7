"""RebalanceUnits and GetRebalanceStatus on a real coordinator and a private etcd, with
in-process agents: a unit placed on one host while the other was cordoned is moved back to
one per host (the old instance stopped on its agent, every route listing only the live
ones). Refusals: a bad unit INVALID_ARGUMENT, an unknown one NOT_FOUND, a status never
written NOT_FOUND. Every RebalanceUnits call is audited."""

from __future__ import annotations

import grpc
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import create_channel
from coordinator.app import Coordinator
from coordinator.fleet.rebalances import rebalance_of
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import until
from tests.integration.coordinator.test_host_cordon_flow import (
    hosts_of,
    publish_and_deploy,
    refused,
)


async def test_a_unit_on_one_host_is_rebalanced_to_one_per_host(etcd: EtcdProcess,
                                                                 prefix: str) -> None:
    config = coordinator_config(etcd, prefix, "c1")
    c1 = Coordinator(config)
    await c1.start()
    agents: dict[str, LocalAgent] = {
        h: start_agent([config.listen], h, f"127.0.0.{n}", cpu=2.0)
        for n, h in ((175, "rb1"), (176, "rb2"))}
    try:
        await until(lambda: c1.leadership.is_leader and {"rb1", "rb2"} <= set(c1.fleet.sessions))
        async with create_channel(config.listen) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            await admin.CordonHost(admin_pb2.CordonHostRequest(host_id="rb2"))
            await publish_and_deploy(admin, "web", 250, 9111, replicas=2)
            await until(lambda: hosts_of(c1, "web") == ["rb1", "rb1"])
            await until(lambda: not c1.state.active_rollouts, timeout=20)
            await admin.UncordonHost(admin_pb2.UncordonHostRequest(host_id="rb2"))

            bad = await refused(admin.RebalanceUnits(
                admin_pb2.RebalanceUnitsRequest(apartment="shop", unit="a/b")))
            assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
            missing = await refused(admin.RebalanceUnits(
                admin_pb2.RebalanceUnitsRequest(apartment="shop", unit="nope")))
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            never = await refused(admin.GetRebalanceStatus(
                admin_pb2.GetRebalanceStatusRequest(apartment="shop", unit="web")))
            assert never.code() == grpc.StatusCode.NOT_FOUND

            response = await admin.RebalanceUnits(admin_pb2.RebalanceUnitsRequest())
            (started,) = response.rebalances  # every uneven unit: this one
            assert started.started and started.status.state == "running"
            assert [(m.unit, m.from_host, m.to_host) for m in started.plan] == [
                ("shop/web", "rb1", "rb2")]
            await until(lambda: (r := rebalance_of(c1.state, "shop", "web")) is not None
                        and r.state.value == "done", timeout=60)
            status = await admin.GetRebalanceStatus(
                admin_pb2.GetRebalanceStatusRequest(apartment="shop", unit="web"))
            assert (status.state, status.moved_count) == ("done", 1), status
            assert hosts_of(c1, "web") == ["rb1", "rb2"]
            live = set(c1.state.instances)
            assert set(agents["rb1"].runtime.instances) | set(
                agents["rb2"].runtime.instances) >= live
            for name in ("rb1", "rb2"):  # every host routes only to the live instances
                await until(lambda name=name: {
                    s["server"] for s in agents[name].runtime.routes.get("shop/web", [])}
                    == live)
            again = await admin.RebalanceUnits(admin_pb2.RebalanceUnitsRequest())
            assert not again.rebalances  # evenly spread: nothing to do

        def audited() -> set[tuple[str, str]]:
            return {(e.details["method"], e.details["outcome"])
                    for e in c1.state.event_history() if e.type == EventType.AUDIT}

        await until(lambda: {("RebalanceUnits", "OK"), ("RebalanceUnits", "NOT_FOUND"),
                             ("RebalanceUnits", "INVALID_ARGUMENT")} <= audited())
    finally:
        for running in agents.values():
            await running.stop()
        await c1.stop()
