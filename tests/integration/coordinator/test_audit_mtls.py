"""Audit under real mutual TLS: with the audit interceptor before the authz interceptor, an
admitted call names its certificate identity (verified), and a call authz refuses is recorded
too, naming the identity the certificate claims and PERMISSION_DENIED.

A grpc.aio server on 127.0.0.1 with certificates made by `landlord certs`; the Admin servicer
is a stand-in (the interceptors are under test), the event sink records in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from common.clock import SystemClock
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import TlsSettings, bound_server, create_channel, create_server
from coordinator.api.audit_interceptor import AuditInterceptor
from coordinator.api.authz_interceptor import AuthzInterceptor
from coordinator.cli.main import app
from coordinator.pki_files import load_trust


class Admin(admin_pb2_grpc.AdminServicer):
    async def Deploy(self, request: Any, context: Any) -> admin_pb2.DeployResponse:
        return admin_pb2.DeployResponse()


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []

    async def emit(self, type_: str, message: str = "", **fields: str) -> None:
        self.events.append({"type": type_, "message": message, **fields})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    runner = CliRunner()
    for args in (["init", str(root)],
                 *(["issue", kind, name, "--ca-dir", str(root)]
                   for kind, name in (("coordinator", "c1"), ("admin", "alice"),
                                      ("viewer", "bob")))):
        result = runner.invoke(app, ["certs", *args])
        assert result.exit_code == 0, result.stderr
    return root


def tls(root: Path, name: str, **extra: Any) -> TlsSettings:
    return TlsSettings(ca_file=str(root / "ca.pem"), cert_file=str(root / f"{name}.pem"),
                       key_file=str(root / f"{name}.key"), **extra)


@pytest.fixture
async def served(pki: Path) -> AsyncIterator[tuple[str, Sink, AuditInterceptor]]:
    trust = load_trust(str(pki / "ca.pem"), str(pki / "crl.pem"))
    sink = Sink()
    audit = AuditInterceptor(sink)
    server = create_server(interceptors=[audit, AuthzInterceptor(lambda: trust, SystemClock())])
    admin_pb2_grpc.add_AdminServicer_to_server(Admin(), server)  # type: ignore[abstract]
    port = bound_server(server, "127.0.0.1:0",
                        tls(pki, "coordinator-c1", require_client_auth=True))
    await server.start()
    try:
        yield f"127.0.0.1:{port}", sink, audit
    finally:
        await server.stop(None)


async def deploy(address: str, settings: TlsSettings) -> grpc.StatusCode:
    async with create_channel(address, settings) as channel:
        try:
            await admin_pb2_grpc.AdminStub(channel).Deploy(
                admin_pb2.DeployRequest(apartment="shop", unit="web", version="2.0.0"),
                timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_audit_names_the_certificate_identity(
        served: tuple[str, Sink, AuditInterceptor], pki: Path) -> None:
    address, sink, audit = served
    assert await deploy(address, tls(pki, "admin-alice", server_name="localhost")) == \
        grpc.StatusCode.OK
    assert await deploy(address, tls(pki, "viewer-bob", server_name="localhost")) == \
        grpc.StatusCode.PERMISSION_DENIED
    await audit.drain(2.0)
    admitted, denied = sink.events
    assert (admitted["caller"], admitted["caller_source"], admitted["outcome"]) == \
        ("admin/alice", "mtls", "OK")
    assert admitted["message"] == "admin/alice Deploy shop/web@2.0.0: OK"
    assert (denied["caller"], denied["caller_source"], denied["outcome"]) == \
        ("viewer/bob", "claimed", "PERMISSION_DENIED")
    assert "viewer/bob may not call /landlord.v1.Admin/Deploy" in denied["error"]
    assert denied["version"] == "2.0.0" and denied["peer"].startswith("ipv4:127.0.0.1:")
