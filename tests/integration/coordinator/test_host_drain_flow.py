"""Draining and decommissioning a host on real coordinators and a private etcd, with in-process
agents: the drain survives a change of leader in the middle, ends with every instance on the
other hosts (spread kept), and the drained host is decommissioned; its agent is then refused.
Refusals: unknown host NOT_FOUND, a bad host id INVALID_ARGUMENT, decommissioning a host
that still holds instances FAILED_PRECONDITION naming them. Every call is audited."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import create_channel
from coordinator.app import Coordinator
from coordinator.fleet.drains import drain_of
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import until
from tests.integration.coordinator.test_host_cordon_flow import (
    hosts_of,
    publish_and_deploy,
    refused,
)


async def test_a_drain_survives_a_new_leader_then_the_host_is_decommissioned(
        etcd: EtcdProcess, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    first = coordinator_config(etcd, prefix, "c1")
    second = coordinator_config(etcd, prefix, "c2")
    both = [first.listen, second.listen]
    c1 = Coordinator(first)
    started = [c1]
    await c1.start()
    agents: dict[str, LocalAgent] = {
        h: start_agent(both, h, f"127.0.0.{n}", cpu=2.0)
        for n, h in ((61, "dr1"), (62, "dr2"), (63, "dr3"))}
    try:
        await until(lambda: c1.leadership.is_leader
                    and {"dr1", "dr2", "dr3"} <= set(c1.fleet.sessions))
        async with create_channel(first.listen) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            for other in ("dr2", "dr3"):  # everything lands on dr1 first
                await admin.CordonHost(admin_pb2.CordonHostRequest(host_id=other))
            await publish_and_deploy(admin, "web", 250, 9101, replicas=2)
            await publish_and_deploy(admin, "api", 250, 9102, replicas=1)
            await until(lambda: hosts_of(c1, "web") == ["dr1", "dr1"]
                        and hosts_of(c1, "api") == ["dr1"])
            await until(lambda: not c1.state.active_rollouts, timeout=20)
            for other in ("dr2", "dr3"):
                await admin.UncordonHost(admin_pb2.UncordonHostRequest(host_id=other))

            missing = await refused(admin.DrainHost(admin_pb2.DrainHostRequest(host_id="nope")))
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            bad = await refused(admin.DrainHost(admin_pb2.DrainHostRequest(host_id="a/b")))
            assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
            short = admin_pb2.DrainHostRequest(host_id="dr1")
            short.deadline.seconds = -5
            negative = await refused(admin.DrainHost(short))
            assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT

            response = await admin.DrainHost(admin_pb2.DrainHostRequest(host_id="dr1"))
            assert response.started and response.status.state == "draining"
            assert sorted(m.to_host for m in response.plan if m.unit == "shop/web") \
                == ["dr2", "dr3"]  # the preview keeps the unit spread
            blocked = await refused(admin.DecommissionHost(
                admin_pb2.DecommissionHostRequest(host_id="dr1")))
            assert blocked.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "shop/web" in (blocked.details() or "")
            # the first move is under way (or done): this leader goes
            await until(lambda: (d := drain_of(c1.state, "dr1")) is not None
                        and ((d.moving is not None and d.moving.new_id != "")
                             or d.moved_count > 0), timeout=20)

        await started.pop().stop()
        leader = Coordinator(second)
        started.append(leader)
        await leader.start()
        await until(lambda: leader.leadership.is_leader, timeout=20)
        await until(lambda: (d := drain_of(leader.state, "dr1")) is not None
                    and d.state.value == "drained", timeout=60)
        assert hosts_of(leader, "web") == ["dr2", "dr3"]
        assert hosts_of(leader, "api")[0] in ("dr2", "dr3")
        assert not leader.state.instances_on("dr1")
        assert not agents["dr1"].runtime.instances  # every old instance stopped
        moved = set(leader.state.instances)
        for name in ("dr2", "dr3"):  # every host's route lists only the new instances
            await until(lambda name=name: {
                s["server"] for s in agents[name].runtime.routes.get("shop/web", [])}
                <= moved)

        async with create_channel(second.listen) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            status = await admin.GetDrainStatus(admin_pb2.GetDrainStatusRequest(host_id="dr1"))
            assert (status.state, status.moved_count, list(status.left)) == ("drained", 3, [])
            busy = await refused(admin.DecommissionHost(
                admin_pb2.DecommissionHostRequest(host_id="dr2")))
            assert busy.code() == grpc.StatusCode.FAILED_PRECONDITION
            done = await admin.DecommissionHost(
                admin_pb2.DecommissionHostRequest(host_id="dr1"))
            assert done.host_id == "dr1"
            hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
            assert "dr1" not in {h.host_id for h in hosts}
            gone = await refused(admin.GetDrainStatus(
                admin_pb2.GetDrainStatusRequest(host_id="dr1")))
            assert gone.code() == grpc.StatusCode.NOT_FOUND
        # its agent keeps trying and is told why it is refused: the host never comes back
        await until(lambda: "dr1 was decommissioned" in caplog.text, timeout=20)
        assert "dr1" not in leader.state.hosts and "dr1" not in leader.fleet.sessions

        def history(type_: str) -> list[Any]:
            return [e for e in leader.state.event_history() if e.type == type_]

        assert [e.host_id for e in history(EventType.HOST_DECOMMISSIONED)] == ["dr1"]
        await until(lambda: any(e.details["method"] == "DecommissionHost"
                                and e.details["outcome"] == "OK"
                                for e in history(EventType.AUDIT)))
        audited = {(e.details["method"], e.host_id, e.details["outcome"])
                   for e in history(EventType.AUDIT)
                   if e.details["method"] in ("DrainHost", "DecommissionHost")}
        assert {("DrainHost", "dr1", "OK"), ("DrainHost", "nope", "NOT_FOUND"),
                ("DecommissionHost", "dr1", "FAILED_PRECONDITION"),
                ("DecommissionHost", "dr1", "OK")} <= audited
    finally:
        for running in agents.values():
            await running.stop()
        for c in started:
            await c.stop()
