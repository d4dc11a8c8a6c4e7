"""Cordoning a host on a real coordinator over mutual TLS, a private etcd and in-process agents:
placements skip the cordoned host (and a refusal names it), the cordon survives the agent
registering again and a change of leader, uncordoning makes the host placeable again, and
each call is audited with the caller and the host; a scoped admin cannot cordon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from common.transport import create_channel
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import Pki, certs, until

WEB, API, BIG = 250, 250, 1000
"""cpu millis of each unit's instances; h2 has 1 cpu, h1 has 4."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("coordinator", "c2"), ("admin", "root"),
                       ("agent", "h1"), ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    certs("issue", "admin", "sam", "--ca-dir", str(root), "--apartments", "shop")
    yield Pki(root)


def config(etcd: EtcdProcess, prefix: str, pki: Pki, name: str) -> CoordinatorConfig:
    return coordinator_config(etcd, prefix, name,
                              tls_ca_file=pki.ca,
                              tls_cert_file=str(pki.root / f"coordinator-{name}.pem"),
                              tls_key_file=str(pki.root / f"coordinator-{name}.key"),
                              tls_crl_file=str(pki.root / "crl.pem"))


async def publish_and_deploy(admin: Any, unit: str, cpu_millis: int, port: int,
                             replicas: int) -> None:
    await admin.PublishVersion(admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit=unit, image="demo:1", service_port=port,
                                resources=types_pb2.Resources(cpu_millis=cpu_millis,
                                                              memory_bytes=32 << 20)),
        version="1.0.0"))
    await admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit=unit, version="1.0.0",
                                               replicas=replicas))


def hosts_of(c: Coordinator, unit: str) -> list[str]:
    return sorted(i.value.host_id for i in c.state.instances.values() if i.value.unit == unit)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def listed(admin: Any, host_id: str) -> Any:
    hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
    return next(h for h in hosts if h.host_id == host_id)


async def test_cordon_steers_placement_and_survives_reregistration_and_a_new_leader(
        etcd: EtcdProcess, prefix: str, pki: Pki) -> None:
    first, second = config(etcd, prefix, pki, "c1"), config(etcd, prefix, pki, "c2")
    both = [first.listen, second.listen]
    c1 = Coordinator(first)
    started = [c1]  # stopped at the end unless stopped before
    await c1.start()

    def agent(host_id: str, cpu: float, images: tuple[str, ...] = ("demo:1",)) -> LocalAgent:
        return start_agent(both, host_id, f"127.0.0.{2 if host_id == 'h1' else 3}",
                           images=images, cpu=cpu, tls=pki.tls(f"host-{host_id}"))

    agents = {"h1": agent("h1", 4.0), "h2": agent("h2", 1.0)}
    try:
        await until(lambda: c1.leadership.is_leader and {"h1", "h2"} <= set(c1.fleet.sessions))
        async with create_channel(first.listen, pki.tls("admin-root")) as r, \
                create_channel(first.listen, pki.tls("admin-sam")) as s:
            root, sam = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(s)
            done = await root.CordonHost(admin_pb2.CordonHostRequest(host_id="h1",
                                                                     reason="disk"))
            assert done.changed and done.host.cordoned and done.host.cordon_reason == "disk"
            again = await root.CordonHost(admin_pb2.CordonHostRequest(host_id="h1"))
            assert not again.changed and again.host.cordon_reason == "disk"
            denied = await refused(sam.CordonHost(admin_pb2.CordonHostRequest(host_id="h2")))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "whole fleet" in (denied.details() or "")
            missing = await refused(root.UncordonHost(admin_pb2.UncordonHostRequest(
                host_id="nope")))
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            assert "host 'nope' does not exist" in (missing.details() or "")

            # two replicas, two hosts, one cordoned: both land on h2
            await publish_and_deploy(root, "web", WEB, 9001, replicas=2)
            await until(lambda: hosts_of(c1, "web") == ["h2", "h2"])
            # only the cordoned host has room: refused, naming the cordon
            big = await refused(publish_and_deploy(root, "big", BIG, 9002, replicas=1))
            assert big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "host h1 is cordoned" in (big.details() or "")

            # the agent registers again with something new: the cordon stays
            await agents.pop("h1").stop()
            agents["h1"] = agent("h1", 4.0, images=("demo:1", "demo:2"))
            await until(lambda: "demo:2" in c1.state.hosts["h1"].value.images)
            assert c1.state.hosts["h1"].value.cordoned

        await started.pop().stop()  # c1 goes: c2 leads from here
        leader = Coordinator(second)
        started.append(leader)
        await leader.start()
        await until(lambda: leader.leadership.is_leader
                    and {"h1", "h2"} <= set(leader.fleet.sessions), timeout=20)
        async with create_channel(second.listen, pki.tls("admin-root")) as r:
            root = admin_pb2_grpc.AdminStub(r)
            h1 = await listed(root, "h1")
            assert (h1.cordoned, h1.cordon_reason) == (True, "disk")
            assert not (await listed(root, "h2")).cordoned
            await publish_and_deploy(root, "api", API, 9003, replicas=2)
            await until(lambda: hosts_of(leader, "api") == ["h2", "h2"])

            done = await root.UncordonHost(admin_pb2.UncordonHostRequest(host_id="h1"))
            assert done.changed and not done.host.cordoned
            assert not (await root.UncordonHost(admin_pb2.UncordonHostRequest(
                host_id="h1"))).changed
            await root.Deploy(admin_pb2.DeployRequest(apartment="shop", unit="big",
                                                      version="1.0.0", replicas=1))
            await until(lambda: hosts_of(leader, "big") == ["h1"])
            assert hosts_of(leader, "web") == ["h2", "h2"]  # running instances never moved

        def history(type_: str) -> list[Any]:
            return [e for e in leader.state.event_history() if e.type == type_]

        await until(lambda: len([e for e in history(EventType.AUDIT)
                                 if e.details["method"] == "UncordonHost"]) >= 3)
        audits = [(e.details["method"], e.details["caller"], e.host_id, e.details["outcome"])
                  for e in history(EventType.AUDIT)
                  if e.details["method"] in ("CordonHost", "UncordonHost")]
        assert audits == [
            ("CordonHost", "admin/root", "h1", "OK"),
            ("CordonHost", "admin/root", "h1", "OK"),
            ("CordonHost", "admin/sam (apartments shop)", "h2", "PERMISSION_DENIED"),
            ("UncordonHost", "admin/root", "nope", "NOT_FOUND"),
            ("UncordonHost", "admin/root", "h1", "OK"),
            ("UncordonHost", "admin/root", "h1", "OK"),
        ]
        changes = [(e.type, e.host_id, e.details.get("reason", ""))
                   for e in history(EventType.HOST_CORDONED) + history(EventType.HOST_UNCORDONED)]
        assert changes == [(EventType.HOST_CORDONED, "h1", "disk"),
                           (EventType.HOST_UNCORDONED, "h1", "")]
    finally:
        for running in agents.values():
            await running.stop()
        for c in started:
            await c.stop()
