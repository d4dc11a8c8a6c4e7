"""The coordinator's gRPC server: health, reflection, graceful shutdown, mutual TLS."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from local_cluster.etcd import EtcdProcess

from agent.stream_client import CoordinatorStream, HostIdentity, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.resources import Resources
from common.transport import TlsSettings, create_channel
from coordinator.app import Coordinator
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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = Path(tmp_path_factory.mktemp("pki"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "1", "-subj", "/CN=landlord-test-ca", cwd=d)
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"),
                        ("client", "subjectAltName=URI:spiffe://landlord/agent/h1")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile",
                 f"{name}.ext", cwd=d)
    return d


async def test_mutual_tls_admits_only_clients_with_a_certificate(
    etcd: EtcdProcess, prefix: str, certificates: Path
) -> None:
    d = certificates
    config = coordinator_config(etcd, prefix, tls_ca_file=str(d / "ca.crt"),
                                tls_cert_file=str(d / "server.crt"),
                                tls_key_file=str(d / "server.key"))
    coordinator = Coordinator(config)
    await coordinator.start()
    client_tls = TlsSettings(ca_file=str(d / "ca.crt"), cert_file=str(d / "client.crt"),
                             key_file=str(d / "client.key"))
    try:
        await _until(lambda: coordinator.leadership.is_leader)
        channel = create_channel(config.listen, client_tls)
        reply = await admin_pb2_grpc.AdminStub(channel).GetLeader(admin_pb2.GetLeaderRequest())
        assert reply.this_is_leader
        await channel.close()
        # the agent stream over mutual TLS, through the same factory
        identity = HostIdentity("h1", "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30))
        stream = CoordinatorStream(FakeRuntime(identity), StreamSettings((config.listen,),
                                                                          tls=client_tls))
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(stream.connected.wait(), 10)
        finally:
            task.cancel()
        # no client certificate, or no TLS at all: refused
        for tls in (TlsSettings(ca_file=str(d / "ca.crt")), TlsSettings()):
            channel = create_channel(config.listen, tls)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin_pb2_grpc.AdminStub(channel).GetLeader(admin_pb2.GetLeaderRequest(),
                                                                  timeout=3)
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.DEADLINE_EXCEEDED)
            await channel.close()
    finally:
        await coordinator.stop()
