"""A real coordinator over real mutual TLS on 127.0.0.1, with a private etcd: who may call
what (coordinator/api/authz.py, installed by coordinator/app.py when tls_ca_file,
tls_cert_file and tls_key_file are set) and which host a certificate may register as
(coordinator/api/agent_service.py). Certificates come from `landlord certs`; agents are the
real agent stream (agent/stream/session.py) over an in-memory runtime.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from local_cluster.etcd import EtcdProcess
from typer.testing import CliRunner

from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc
from common.resources import Resources
from common.stream_messages import Registration
from common.transport import TlsSettings, create_channel
from coordinator.app import Coordinator
from coordinator.cli.main import app
from coordinator.config import CoordinatorConfig
from coordinator.main import serve
from tests.e2e.simulated_agent import FakeRuntime
from tests.integration.coordinator.conftest import coordinator_config

runner = CliRunner()


def certs(*args: str) -> None:
    result = runner.invoke(app, ["certs", *args])
    assert result.exit_code == 0, result.stderr


@dataclass
class Pki:
    root: Path

    @property
    def ca(self) -> str:
        return str(self.root / "ca.pem")

    def tls(self, name: str) -> TlsSettings:
        return TlsSettings(ca_file=self.ca, cert_file=str(self.root / f"{name}.pem"),
                           key_file=str(self.root / f"{name}.key"))

    def revoke(self, name: str) -> None:
        certs("revoke", str(self.root / f"{name}.pem"), "--ca-dir", str(self.root))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("admin", "alice"), ("viewer", "bob"),
                       ("viewer", "eve"), ("viewer", "trudy"), ("viewer", "zed"),
                       ("agent", "h1"), ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    yield Pki(root)


def mtls_config(etcd: EtcdProcess, prefix: str, pki: Pki) -> CoordinatorConfig:
    return coordinator_config(etcd, prefix, tls_ca_file=pki.ca,
                              tls_cert_file=str(pki.root / "coordinator-c1.pem"),
                              tls_key_file=str(pki.root / "coordinator-c1.key"),
                              tls_crl_file=str(pki.root / "crl.pem"))


async def until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # polling in-process state
            await asyncio.sleep(0.02)


@pytest.fixture
async def coordinator(etcd: EtcdProcess, prefix: str, pki: Pki) -> AsyncIterator[Coordinator]:
    c = Coordinator(mtls_config(etcd, prefix, pki))
    await c.start()
    try:
        await until(lambda: c.leadership.is_leader)
        yield c
    finally:
        await c.stop()


async def call(address: str, tls: TlsSettings, method: str, request: Any) -> Any:
    async with create_channel(address, tls) as channel:
        return await getattr(admin_pb2_grpc.AdminStub(channel), method)(request, timeout=5)


async def refused(address: str, tls: TlsSettings, method: str, request: Any
                  ) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, tls, method, request)
    return caught.value


LIST = admin_pb2.ListUnitsRequest()
DEPLOY = admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0")


async def test_who_may_call_what(coordinator: Coordinator, pki: Pki) -> None:
    address = coordinator.config.listen
    # no client certificate (the handshake refuses it), and no TLS at all
    for tls in (TlsSettings(ca_file=pki.ca), TlsSettings()):
        refusal = await refused(address, tls, "ListUnits", LIST)
        assert refusal.code() in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED), tls
    # a viewer lists, but may not deploy
    await call(address, pki.tls("viewer-bob"), "ListUnits", LIST)
    denied = await refused(address, pki.tls("viewer-bob"), "Deploy", DEPLOY)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details().startswith("viewer/bob may not call /landlord.v1.Admin/Deploy")
    # an agent's certificate may not call the admin API
    denied = await refused(address, pki.tls("host-h1"), "Deploy", DEPLOY)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details().startswith("host/h1 may not call /landlord.v1.Admin/Deploy")
    # an admin reaches the servicer (which finds no such unit)
    missing = await refused(address, pki.tls("admin-alice"), "Deploy", DEPLOY)
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def agent(host_id: str, address: str, tls: TlsSettings) -> CoordinatorStream:
    identity = Registration(host_id, "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30))
    return CoordinatorStream(FakeRuntime(identity), StreamSettings((address,), tls=tls))


async def test_a_host_certificate_registers_only_as_its_host(coordinator: Coordinator,
                                                             pki: Pki) -> None:
    address = coordinator.config.listen
    h2 = agent("h2", address, pki.tls("host-h2"))
    task = asyncio.create_task(h2.run())
    try:
        await asyncio.wait_for(h2.connected.wait(), 10)
        session = coordinator.fleet.sessions["h2"]
        record = coordinator.state.hosts["h2"].value
        async with create_channel(address, pki.tls("host-h1")) as channel:
            stream = agent_pb2_grpc.AgentStreamStub(channel).Session(timeout=5)
            await stream.write(agent_pb2.AgentMessage(register=agent_pb2.Register(
                host_id="h2", building="default", address="127.0.0.66")))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream.read()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == (
            "host/h1 may not register as host 'h2': its certificate is for host 'h1'")
        # the real h2 stream is untouched: same session, open, same address in etcd
        assert coordinator.fleet.sessions["h2"] is session
        assert not session.closed.is_set()
        assert h2.connected.is_set()
        assert coordinator.state.hosts["h2"].value.address == record.address == "127.0.0.2"
        assert "h1" not in coordinator.state.hosts
        # h1's certificate registers as h1
        h1 = agent("h1", address, pki.tls("host-h1"))
        first = asyncio.create_task(h1.run())
        try:
            await asyncio.wait_for(h1.connected.wait(), 10)
            await until(lambda: "h1" in coordinator.fleet.sessions)
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_revoked_refused_at_connect_and_after_reload(etcd: EtcdProcess, prefix: str,
                                                          pki: Pki) -> None:
    pki.revoke("viewer-trudy")  # on the CRL before the coordinator starts
    c = Coordinator(mtls_config(etcd, prefix, pki))
    await c.start()
    try:
        address = c.config.listen
        refusal = await refused(address, pki.tls("viewer-trudy"), "ListUnits", LIST)
        assert refusal.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "viewer/trudy: revoked" in refusal.details()
        await call(address, pki.tls("viewer-eve"), "ListUnits", LIST)
        pki.revoke("viewer-eve")
        await call(address, pki.tls("viewer-eve"), "ListUnits", LIST)  # until reloaded
        assert c.reload_trust()
        refusal = await refused(address, pki.tls("viewer-eve"), "ListUnits", LIST)
        assert refusal.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refusal.details().startswith(
            "/landlord.v1.Admin/ListUnits refused: viewer/eve: revoked (serial ")
        await call(address, pki.tls("viewer-bob"), "ListUnits", LIST)  # others unaffected
    finally:
        await c.stop()


async def test_sighup_reloads_the_crl(etcd: EtcdProcess, prefix: str, pki: Pki) -> None:
    """The daemon's own signal handling (coordinator/main.py serve)."""
    config = mtls_config(etcd, prefix, pki)
    serving = asyncio.create_task(serve(config, environ={}))
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    await call(config.listen, pki.tls("viewer-zed"), "ListUnits", LIST)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        pki.revoke("viewer-zed")
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(5):
            while True:
                try:
                    await call(config.listen, pki.tls("viewer-zed"), "ListUnits", LIST)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    break
                await asyncio.sleep(0.05)
    finally:
        if not serving.done():  # serve's SIGTERM handler is installed: it stops serve
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 15)


def served_serial(address: str, pki: Pki) -> int:
    """The serial of the certificate the server shows a new connection (plain ssl)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.root / "admin-alice.pem", pki.root / "admin-alice.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def test_server_certificate_reloaded_without_dropping_streams(
        coordinator: Coordinator, pki: Pki) -> None:
    address = coordinator.config.listen
    cert = pki.root / "coordinator-c1.pem"
    h2 = agent("h2", address, pki.tls("host-h2"))
    task = asyncio.create_task(h2.run())
    try:
        await asyncio.wait_for(h2.connected.wait(), 10)
        session = coordinator.fleet.sessions["h2"]
        before = await asyncio.to_thread(served_serial, address, pki)
        assert before == file_serial(cert)
        certs("renew", str(cert), "--ca-dir", str(pki.root))
        assert file_serial(cert) != before
        assert coordinator.reload_trust()
        assert await asyncio.to_thread(served_serial, address, pki) == file_serial(cert)
        await call(address, pki.tls("admin-alice"), "GetLeader", admin_pb2.GetLeaderRequest())
        assert coordinator.fleet.sessions["h2"] is session and not session.closed.is_set()
        # a key that is not the certificate's: refused, the served one stays
        original = (pki.root / "coordinator-c1.key").read_bytes()
        (pki.root / "coordinator-c1.key").write_bytes(
            (pki.root / "admin-alice.key").read_bytes())
        try:
            assert not coordinator.reload_trust()
        finally:
            (pki.root / "coordinator-c1.key").write_bytes(original)
        assert await asyncio.to_thread(served_serial, address, pki) == file_serial(cert)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
