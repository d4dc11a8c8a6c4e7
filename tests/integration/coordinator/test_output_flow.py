"""Instance output through a real coordinator over mutual TLS, with in-process agents whose
simulated instances have output: logs come whole and end; a follow runs until the caller
goes away, and its host is told to stop; exec's exit code comes through; a viewer and a
follower's answer are refused as they should be, and the calls are audited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import create_channel
from coordinator.app import Coordinator
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.test_coord_mtls import Pki, certs, until
from tests.integration.coordinator.test_host_cordon_flow import hosts_of, publish_and_deploy
from tests.integration.coordinator.test_snapshot_flow import config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("admin", "root"), ("viewer", "vera"),
                       ("agent", "h1"), ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    yield Pki(root)


async def read(call: Any) -> list[Any]:
    return [piece async for piece in call]


async def test_logs_follow_and_exec_through_the_coordinator(etcd: EtcdProcess, prefix: str,
                                                            pki: Pki) -> None:
    settings = config(etcd, prefix, pki, "c1")
    c1 = Coordinator(settings)
    await c1.start()
    agents: list[LocalAgent] = []
    try:
        agents = [start_agent([settings.listen], h, f"127.0.0.{n}", tls=pki.tls(f"host-{h}"))
                  for h, n in (("h1", 2), ("h2", 3))]
        await until(lambda: c1.leadership.is_leader and {"h1", "h2"} <= set(c1.fleet.sessions))
        async with create_channel(settings.listen, pki.tls("admin-root")) as r, \
                create_channel(settings.listen, pki.tls("viewer-vera")) as v:
            root, vera = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(v)
            await publish_and_deploy(root, "web", 250, 9001, replicas=2)
            await until(lambda: len(hosts_of(c1, "web")) == 2)
            iid = next(i for i, rec in c1.state.instances.items() if rec.value.host_id == "h2")
            await until(lambda: iid in agents[1].runtime.instances)

            pieces = await read(root.InstanceLogs(admin_pb2.InstanceLogsRequest(
                instance_id=iid)))
            assert b"".join(p.data for p in pieces) == b"".join(
                f"{iid} 1.0.0 line {n}\n".encode() for n in (1, 2, 3))
            assert pieces[-1].end

            follow = root.InstanceLogs(admin_pb2.InstanceLogsRequest(instance_id=iid,
                                                                     follow=True))
            lines = 0
            async for piece in follow:
                lines += piece.data.count(b"\n")
                if lines >= 8:  # more than the plain read had: it keeps coming
                    break
            follow.cancel()
            h2 = agents[1]  # the host was told to stop: its stream ends, nothing is left
            await until(lambda: h2.stream.commands.outputs.active == 0, timeout=10)
            assert c1.outputs.open == 0

            ran = await read(root.ExecInstance(admin_pb2.ExecInstanceRequest(
                instance_id=iid, argv=["exit", "7"])))
            assert ran[0].data == b"exit 7\n" and ran[-1].end and ran[-1].exit_code == 7

            for call in (vera.InstanceLogs(admin_pb2.InstanceLogsRequest(instance_id=iid)),
                         root.ExecInstance(admin_pb2.ExecInstanceRequest(instance_id=iid)),
                         root.InstanceLogs(admin_pb2.InstanceLogsRequest(instance_id="nope"))):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await read(call)
                assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED,
                                                grpc.StatusCode.INVALID_ARGUMENT,
                                                grpc.StatusCode.NOT_FOUND)

        def audits() -> list[tuple[str, str, str]]:
            return [(e.details["method"], e.details["caller"], e.details["outcome"])
                    for e in c1.state.event_history() if e.type == EventType.AUDIT
                    and e.details["method"] in ("InstanceLogs", "ExecInstance")]

        await until(lambda: len(audits()) == 6)
        assert sorted(audits()) == sorted([  # (a cancelled follow ends when grpc notices)
            ("InstanceLogs", "admin/root", "OK"), ("InstanceLogs", "admin/root", "CANCELLED"),
            ("ExecInstance", "admin/root", "OK"),
            ("InstanceLogs", "viewer/vera", "PERMISSION_DENIED"),
            ("ExecInstance", "admin/root", "INVALID_ARGUMENT"),
            ("InstanceLogs", "admin/root", "NOT_FOUND")])
    finally:
        for agent in agents:
            await agent.stop()
        await c1.stop()
        await asyncio.sleep(0)
