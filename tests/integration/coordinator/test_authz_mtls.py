"""Authorization over real mutual TLS: a grpc.aio server on 127.0.0.1 with the authz
interceptor, certificates made by `landlord certs`, and clients holding each identity.

The servicers are small stand-ins (the interceptor is what is under test); the transport is
the project's own (common/transport) with the real TLS stack on both sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from common.clock import FakeClock, SystemClock
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2
from common.pki_check import Trust
from common.transport import TlsSettings, bound_server, create_channel, create_server
from coordinator.api.authz_interceptor import AuthzInterceptor, caller_identity
from coordinator.cli.main import app
from coordinator.pki_files import load_trust

runner = CliRunner()


def certs(*args: str) -> None:
    result = runner.invoke(app, ["certs", *args])
    assert result.exit_code == 0, result.stderr


class Admin(admin_pb2_grpc.AdminServicer):
    """Answers with who called, so the test sees the identity the servicer was given."""

    async def ListUnits(self, request: Any, context: Any) -> admin_pb2.ListUnitsResponse:
        who = caller_identity()
        return admin_pb2.ListUnitsResponse(units=[types_pb2.UnitInfo(unit=str(who))])

    async def Deploy(self, request: Any, context: Any) -> admin_pb2.DeployResponse:
        return admin_pb2.DeployResponse()

    async def StreamEvents(self, request: Any, context: Any) -> AsyncIterator[types_pb2.Event]:
        for sequence in (1, 2):
            yield types_pb2.Event(sequence=sequence, apartment=request.apartment)


class Agents(agent_pb2_grpc.AgentStreamServicer):
    async def Session(self, requests: Any, context: Any
                      ) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        async for message in requests:
            yield agent_pb2.CoordinatorMessage(
                registered=agent_pb2.Registered())
            del message
            return


@dataclass
class Pki:
    root: Path

    def tls(self, name: str, server_name: str = "localhost") -> TlsSettings:
        return TlsSettings(ca_file=str(self.root / "ca.pem"),
                           cert_file=str(self.root / f"{name}.pem"),
                           key_file=str(self.root / f"{name}.key"), server_name=server_name)

    def anonymous(self) -> TlsSettings:
        return TlsSettings(ca_file=str(self.root / "ca.pem"), server_name="localhost")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("admin", "alice"), ("viewer", "bob"),
                       ("viewer", "eve"), ("agent", "h1")):
        certs("issue", kind, name, "--ca-dir", str(root))
    other = root / "other"
    certs("init", str(other))
    certs("issue", "admin", "mallory", "--ca-dir", str(other))
    yield Pki(root)


class Server:
    def __init__(self, pki: Pki, clock: Any, require_client_auth: bool = True) -> None:
        self.trust: Trust = load_trust(str(pki.root / "ca.pem"), str(pki.root / "crl.pem"))
        self.server = create_server(interceptors=[AuthzInterceptor(lambda: self.trust, clock)])
        # a stand-in answering three methods; the others stay UNIMPLEMENTED
        admin_pb2_grpc.add_AdminServicer_to_server(Admin(), self.server)  # type: ignore[abstract]
        agent_pb2_grpc.add_AgentStreamServicer_to_server(Agents(), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)
        tls = TlsSettings(ca_file=str(pki.root / "ca.pem"),
                          cert_file=str(pki.root / "coordinator-c1.pem"),
                          key_file=str(pki.root / "coordinator-c1.key"),
                          require_client_auth=require_client_auth)
        self.address = f"127.0.0.1:{bound_server(self.server, '127.0.0.1:0', tls)}"


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[Server]:
    running = Server(pki, SystemClock())
    await running.server.start()
    try:
        yield running
    finally:
        await running.server.stop(None)


async def call(address: str, tls: TlsSettings, method: str, request: Any) -> Any:
    async with create_channel(address, tls) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        return await getattr(stub, method)(request, timeout=5)


async def refused(address: str, tls: TlsSettings, method: str, request: Any
                  ) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, tls, method, request)
    return caught.value


DEPLOY = admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0")


async def test_viewer_lists_but_cannot_deploy(server: Server, pki: Pki) -> None:
    reply = await call(server.address, pki.tls("viewer-bob"), "ListUnits",
                       admin_pb2.ListUnitsRequest())
    assert [u.unit for u in reply.units] == ["viewer/bob"]
    denied = await refused(server.address, pki.tls("viewer-bob"), "Deploy", DEPLOY)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details() == ("viewer/bob may not call /landlord.v1.Admin/Deploy: viewer "
                                "identities may call only read methods (list, show, status, "
                                "watch, events)")
    async with create_channel(server.address, pki.tls("viewer-bob")) as channel:
        events = admin_pb2_grpc.AdminStub(channel).StreamEvents(
            admin_pb2.StreamEventsRequest(apartment="shop"), timeout=5)
        assert [e.sequence async for e in events] == [1, 2]


async def test_admin_deploys(server: Server, pki: Pki) -> None:
    assert await call(server.address, pki.tls("admin-alice"), "Deploy", DEPLOY) == \
        admin_pb2.DeployResponse()


async def test_host_speaks_only_on_the_agent_stream(server: Server, pki: Pki) -> None:
    denied = await refused(server.address, pki.tls("host-h1"), "ListUnits",
                           admin_pb2.ListUnitsRequest())
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details().startswith("host/h1 may not call /landlord.v1.Admin/ListUnits")
    async with create_channel(server.address, pki.tls("host-h1")) as channel:
        session = agent_pb2_grpc.AgentStreamStub(channel).Session(timeout=5)
        await session.write(agent_pb2.AgentMessage(register=agent_pb2.Register(host_id="h1")))
        reply = await session.read()
        assert reply.WhichOneof("body") == "registered"
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # a streaming behavior that writes through its context (health Watch) passes through
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    async with create_channel(server.address, pki.tls("admin-alice")) as channel:
        session = agent_pb2_grpc.AgentStreamStub(channel).Session(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await session.read()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin/alice may not call /landlord.v1.AgentStream/Session" in \
            caught.value.details()


async def test_no_client_certificate_refused(server: Server, pki: Pki) -> None:
    # the TLS handshake itself refuses a client without a certificate
    refusal = await refused(server.address, pki.anonymous(), "ListUnits",
                            admin_pb2.ListUnitsRequest())
    assert refusal.code() == grpc.StatusCode.UNAVAILABLE
    # and so does one whose certificate another CA signed
    refusal = await refused(server.address, pki.tls("other/admin-mallory"), "ListUnits",
                            admin_pb2.ListUnitsRequest())
    assert refusal.code() == grpc.StatusCode.UNAVAILABLE


async def test_interceptor_refuses_anonymous_when_tls_does_not(pki: Pki) -> None:
    """A server whose TLS does not ask for client certificates still admits no one."""
    lax = Server(pki, SystemClock(), require_client_auth=False)
    await lax.server.start()
    try:
        refusal = await refused(lax.address, pki.tls("admin-alice"), "ListUnits",
                                admin_pb2.ListUnitsRequest())
        assert refusal.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refusal.details() == "/landlord.v1.Admin/ListUnits refused: no client certificate"
    finally:
        await lax.server.stop(None)


async def test_revoked_refused_after_the_crl_is_reloaded(server: Server, pki: Pki) -> None:
    tls = pki.tls("viewer-eve")
    await call(server.address, tls, "ListUnits", admin_pb2.ListUnitsRequest())
    certs("revoke", str(pki.root / "viewer-eve.pem"), "--ca-dir", str(pki.root))
    server.trust = load_trust(str(pki.root / "ca.pem"), str(pki.root / "crl.pem"))
    refusal = await refused(server.address, tls, "ListUnits", admin_pb2.ListUnitsRequest())
    assert refusal.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusal.details().startswith(
        "/landlord.v1.Admin/ListUnits refused: viewer/eve: revoked (serial ")
    # others are untouched
    await call(server.address, pki.tls("viewer-bob"), "ListUnits", admin_pb2.ListUnitsRequest())


async def test_expired_refused_on_an_open_connection(pki: Pki) -> None:
    """The handshake checked validity once; a later call on the same channel is checked again."""
    clock = FakeClock(start=SystemClock().now())
    running = Server(pki, clock)
    await running.server.start()
    try:
        async with create_channel(running.address, pki.tls("viewer-bob")) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            await stub.ListUnits(admin_pb2.ListUnitsRequest(), timeout=5)
            clock.advance(366 * 86_400)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListUnits(admin_pb2.ListUnitsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "viewer/bob: expired (on " in caught.value.details()
    finally:
        await running.server.stop(None)
