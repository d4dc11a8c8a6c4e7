"""Certificates change under running daemons: a real coordinator over real mutual TLS on
127.0.0.1 with a private etcd, and real agents (the agent daemon over an in-memory runtime,
or its coordinator stream over a fake endpoint).

- The agent re-reads its TLS files on SIGHUP (agent/daemon.py): its open stream stays, the
  next connection shows the renewed certificate, and files that do not load are refused
  with the previous ones kept.
- After the coordinator reloads its CA bundle and CRL, open streams of a revoked
  certificate end UNAUTHENTICATED (coordinator/api/open_streams.py) and cannot come back.
- Both daemons warn about their own certificate when it expires soon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from local_cluster.etcd import EtcdProcess

from agent.config import AgentConfig
from agent.daemon import run_daemon
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.identity import Identity, Role
from common.pki import LeafRequest, issue
from common.transport import create_channel
from coordinator.api.open_streams import OpenStream
from coordinator.app import Coordinator
from coordinator.pki_files import CaFiles
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import Pki, agent, certs, mtls_config, until
from tests.unit.agent.fake_runtime import RecordingRuntime

SESSION = "/landlord.v1.AgentStream/Session"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("viewer", "eve"), ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    certs("issue", "agent", "h1", "--days", "3", "--ca-dir", str(root))
    yield Pki(root)


@pytest.fixture
async def coordinator(etcd: EtcdProcess, prefix: str, pki: Pki) -> AsyncIterator[Coordinator]:
    c = Coordinator(mtls_config(etcd, prefix, pki))
    await c.start()
    try:
        await until(lambda: c.leadership.is_leader)
        yield c
    finally:
        await c.stop()


def serial(pem: bytes | str) -> int:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).serial_number


def file_serial(path: Path) -> int:
    return serial(path.read_bytes())


def agent_stream(coordinator: Coordinator, host: str) -> OpenStream | None:
    """The open Session stream of ``host`` as the coordinator's registry has it."""
    found = [s for s in coordinator.streams
             if s.method == SESSION and s.identity.name == host and s.refusal is None]
    return found[0] if len(found) == 1 else None


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_agent_reloads_its_certificate_on_sighup_and_keeps_its_stream(
        coordinator: Coordinator, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cert = pki.root / "host-h1.pem"
    tls = pki.tls("host-h1")
    config = AgentConfig(host_id="h1", data_dir=tmp_path / "data", bandwidth=False,
                         data_plane=False, coordinators=(coordinator.config.listen,),
                         tls_ca_file=tls.ca_file, tls_cert_file=tls.cert_file,
                         tls_key_file=tls.key_file)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(config, runtime=RecordingRuntime(), stop=stop))
    try:
        await until(lambda: agent_stream(coordinator, "h1") is not None
                    and "h1" in coordinator.fleet.sessions)  # admitted, then registered
        first = agent_stream(coordinator, "h1")
        assert first is not None and serial(first.pem) == file_serial(cert)
        session = coordinator.fleet.sessions["h1"]
        # issued for 3 days: the agent warned at start, naming the file and the identity
        await until(lambda: any("host/h1" in m for m in messages(caplog, logging.WARNING)))
        [warning] = [m for m in messages(caplog, logging.WARNING) if "host/h1" in m]
        assert warning.startswith(f"certificate {cert} (host/h1) expires in 2 days 23 hours")
        caplog.clear()

        certs("renew", str(cert), "--days", "365", "--ca-dir", str(pki.root))
        renewed = file_serial(cert)
        assert renewed != serial(first.pem)
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None), \
            "the agent daemon does not handle SIGHUP (it would die of it)"
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: any(m.startswith(f"reloaded the certificate {cert}")
                                for m in messages(caplog, logging.INFO)))
        await asyncio.sleep(0.2)  # the expiry watch looked again: a year left, so quiet
        assert not [m for m in messages(caplog, logging.WARNING) if "host/h1" in m]
        # the open stream stays, on its old TLS session
        assert coordinator.fleet.sessions["h1"] is session and not session.closed.is_set()
        assert agent_stream(coordinator, "h1") is first

        # a broken certificate file is refused, the renewed one stays in use
        original = cert.read_bytes()
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: any(m.startswith("cannot reload the TLS files, keeping the "
                                                 "previous ones")
                                    for m in messages(caplog, logging.ERROR)))
            # the next connection (the coordinator drops this one) shows the renewed one
            session.close("test: reconnect")
            await until(lambda: (s := agent_stream(coordinator, "h1")) is not None
                        and s is not first)
            again = agent_stream(coordinator, "h1")
            assert again is not None and serial(again.pem) == renewed
        finally:
            cert.write_bytes(original)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 20)


async def test_a_revoked_stream_is_ended_at_reload_and_cannot_come_back(
        coordinator: Coordinator, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    address = coordinator.config.listen
    h2 = agent("h2", address, pki.tls("host-h2"))
    running = asyncio.create_task(h2.run())
    channel = create_channel(address, pki.tls("viewer-eve"))
    try:
        await asyncio.wait_for(h2.connected.wait(), 10)
        session = coordinator.fleet.sessions["h2"]
        events = admin_pb2_grpc.AdminStub(channel).StreamEvents(
            admin_pb2.StreamEventsRequest(follow=True))
        await until(lambda: any(s.identity.name == "eve" for s in coordinator.streams))
        pki.revoke("host-h2")
        pki.revoke("viewer-eve")
        assert not session.closed.is_set()  # the CRL file changed; not reloaded yet
        assert coordinator.reload_trust()
        # the agent's stream is ended with the reason, and its session closed
        await until(lambda: session.closed.is_set() and "h2" not in coordinator.fleet.sessions)
        await until(lambda: not h2.connected.is_set())
        # the viewer's event stream too
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(5):
                async for _ in events:
                    pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details().startswith(
            "/landlord.v1.Admin/StreamEvents ended: viewer/eve: revoked (serial ")
        # the agent saw why, and its reconnects are refused at the call
        await until(lambda: any("UNAUTHENTICATED" in m and "host/h2: revoked" in m
                                for m in messages(caplog, logging.ERROR)))
        await asyncio.sleep(1.0)
        assert "h2" not in coordinator.fleet.sessions and h2.sessions == 1
        assert not any(s.identity.name in ("h2", "eve") for s in coordinator.streams)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await channel.close(None)


async def test_the_coordinator_warns_about_its_own_certificate(
        etcd: EtcdProcess, prefix: str, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    certs("issue", "coordinator", "c3", "--days", "3", "--ca-dir", str(pki.root))
    config = coordinator_config(etcd, prefix, "c3", tls_ca_file=pki.ca,
                                tls_cert_file=str(pki.root / "coordinator-c3.pem"),
                                tls_key_file=str(pki.root / "coordinator-c3.key"))
    caplog.set_level(logging.INFO)
    c = Coordinator(config)
    await c.start()
    try:
        await until(lambda: any("coordinator/c3" in m for m in messages(caplog,
                                                                        logging.WARNING)))
        [warning] = [m for m in messages(caplog, logging.WARNING) if "coordinator/c3" in m]
        assert warning.startswith(f"certificate {config.tls_cert_file} (coordinator/c3) "
                                  "expires in 2 days 23 hours, on ")
    finally:
        await c.stop()


async def test_a_stream_is_ended_when_its_certificate_expires(
        etcd: EtcdProcess, prefix: str, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """No reload: the coordinator checks open streams again every STREAM_RECHECK_SECONDS."""
    monkeypatch.setattr("coordinator.app.STREAM_RECHECK_SECONDS", 0.2)
    coordinator = Coordinator(mtls_config(etcd, prefix, pki))
    await coordinator.start()
    files = CaFiles(pki.root)
    now = datetime.now(UTC)  # a one-day certificate issued a day ago, less 4 seconds
    short = issue(files.load(), LeafRequest(Identity(Role.VIEWER, "brief"), days=1),
                  now - timedelta(days=1) + timedelta(seconds=4))
    files.write_leaf(short, pki.root / "viewer-brief.pem", pki.root / "viewer-brief.key")
    channel = create_channel(coordinator.config.listen, pki.tls("viewer-brief"))
    try:
        events = admin_pb2_grpc.AdminStub(channel).StreamEvents(
            admin_pb2.StreamEventsRequest(follow=True))
        await until(lambda: any(s.identity.name == "brief" for s in coordinator.streams))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(15):
                async for _ in events:
                    pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "viewer/brief" in caught.value.details() and "expired" in \
            caught.value.details(), caught.value.details()
    finally:
        await channel.close(None)
        await coordinator.stop()
