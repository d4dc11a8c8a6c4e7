"""The coordinator's gRPC server: health, reflection, graceful shutdown, mutual TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from local_cluster.etcd import EtcdProcess
from typer.testing import CliRunner

from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.resources import Resources
from common.stream_messages import Registration
from common.transport import TlsSettings, create_channel
from coordinator.app import Coordinator
from coordinator.cli.main import app
from tests.e2e.simulated_agent import FakeRuntime
from tests.integration.coordinator.conftest import coordinator_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_and_reflection(coordinator: Coordinator) -> None:
    async with grpc.aio.insecure_channel(coordinator.config.listen) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "landlord.v1.Admin", "landlord.v1.AgentStream"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # reflection lists every service (the sync client; run off the event loop)
    services = await asyncio.to_thread(_reflected, coordinator.config.listen)
    assert {"landlord.v1.Admin", "landlord.v1.AgentStream", "grpc.health.v1.Health"} <= services


def _reflected(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


async def test_shutdown_turns_health_not_serving_and_hands_over(
    etcd: EtcdProcess, prefix: str
) -> None:
    first = Coordinator(coordinator_config(etcd, prefix, name="a"))
    second = Coordinator(coordinator_config(etcd, prefix, name="b"))
    await first.start()
    await _until(lambda: first.leadership.is_leader)
    await second.start()
    async with grpc.aio.insecure_channel(first.config.listen) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="landlord.v1.Admin"))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(first.stop())
        assert (await watch.read()).status == NOT_SERVING
        await stopping
    try:
        await _until(lambda: second.leadership.is_leader, timeout=2)  # resigned: no TTL wait
    finally:
        await second.stop()


async def _until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # polling in-process state
            await asyncio.sleep(0.02)


def _certs(*args: str) -> None:
    result = CliRunner().invoke(app, ["certs", *args])
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA (`landlord certs init`), the coordinator's certificate (127.0.0.1 and localhost),
    an admin's and host h1's."""
    d = Path(tmp_path_factory.mktemp("pki"))
    _certs("init", str(d))
    for kind, name in (("coordinator", "c1"), ("admin", "alice"), ("agent", "h1")):
        _certs("issue", kind, name, "--ca-dir", str(d))
    return d


async def test_mutual_tls_admits_only_clients_with_a_certificate(
    etcd: EtcdProcess, prefix: str, certificates: Path
) -> None:
    d = certificates
    config = coordinator_config(etcd, prefix, tls_ca_file=str(d / "ca.pem"),
                                tls_cert_file=str(d / "coordinator-c1.pem"),
                                tls_key_file=str(d / "coordinator-c1.key"))
    coordinator = Coordinator(config)
    await coordinator.start()

    def client_tls(name: str) -> TlsSettings:
        return TlsSettings(ca_file=str(d / "ca.pem"), cert_file=str(d / f"{name}.pem"),
                           key_file=str(d / f"{name}.key"))

    try:
        await _until(lambda: coordinator.leadership.is_leader)
        channel = create_channel(config.listen, client_tls("admin-alice"))
        reply = await admin_pb2_grpc.AdminStub(channel).GetLeader(admin_pb2.GetLeaderRequest())
        assert reply.this_is_leader
        await channel.close()
        # the agent stream over mutual TLS, through the same factory, with h1's certificate
        identity = Registration("h1", "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30))
        stream = CoordinatorStream(FakeRuntime(identity), StreamSettings(
            (config.listen,), tls=client_tls("host-h1")))
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(stream.connected.wait(), 10)
        finally:
            task.cancel()
        # no client certificate, or no TLS at all: refused
        for tls in (TlsSettings(ca_file=str(d / "ca.pem")), TlsSettings()):
            channel = create_channel(config.listen, tls)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin_pb2_grpc.AdminStub(channel).GetLeader(admin_pb2.GetLeaderRequest(),
                                                                  timeout=3)
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.DEADLINE_EXCEEDED)
            await channel.close()
    finally:
        await coordinator.stop()
