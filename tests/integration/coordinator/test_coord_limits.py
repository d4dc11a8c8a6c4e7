"""Limits against abuse on a real coordinator over mutual TLS, with a private etcd
(coordinator/api/call_limits.py, common/transport/settings.py ConnectionLimits): half-open
connections are closed within the handshake timeout, an identity over its cap of calls gets
RESOURCE_EXHAUSTED while another identity is served, and ListHosts stays fast meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import TlsSettings, create_channel
from coordinator.app import Coordinator
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import Pki, mtls_config, pki, until

__all__ = ["pki"]  # the module-scoped certificates fixture, shared

HANDSHAKE_TIMEOUT = 1.0
CAP = 3
LIST_HOSTS = admin_pb2.ListHostsRequest()


@pytest.fixture
async def coordinator(etcd: EtcdProcess, prefix: str, pki: Pki) -> AsyncIterator[Coordinator]:
    config = mtls_config(etcd, prefix, pki)
    c = Coordinator(type(config)(**{**config.__dict__, "handshake_timeout": HANDSHAKE_TIMEOUT,
                                    "max_calls_per_identity": CAP}))
    await c.start()
    try:
        await until(lambda: c.leadership.is_leader)
        yield c
    finally:
        await c.stop()


def closed_after(port: int, first_bytes: bytes, limit: float) -> float:
    """Connect, send ``first_bytes`` (perhaps nothing) and wait for the server to close the
    connection: the seconds that took (``limit`` when it did not)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(limit)
        started = time.monotonic()
        if first_bytes:
            conn.sendall(first_bytes)
        try:
            while conn.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        return time.monotonic() - started


async def listed_in(address: str, tls: TlsSettings) -> float:
    """Seconds one ListHosts takes on a fresh channel (connection and handshake included)."""
    async with create_channel(address, tls) as channel:
        started = time.monotonic()
        await admin_pb2_grpc.AdminStub(channel).ListHosts(LIST_HOSTS, timeout=5)
        return time.monotonic() - started


@pytest.mark.parametrize("first_bytes", [b"", b"\x16\x03\x01\x02\x00\x01"],
                         ids=["nothing", "partial-client-hello"])
async def test_half_open_connections_closed_within_the_handshake_timeout(
        coordinator: Coordinator, pki: Pki, first_bytes: bytes) -> None:
    stalled = [asyncio.to_thread(closed_after, coordinator.port, first_bytes, 10.0)
               for _ in range(20)]
    await asyncio.sleep(0.2)
    # meanwhile a real client is served promptly
    assert await listed_in(coordinator.config.listen, pki.tls("admin-alice")) < 1.0
    for took in await asyncio.gather(*stalled):
        assert HANDSHAKE_TIMEOUT * 0.8 < took < HANDSHAKE_TIMEOUT + 2.0


async def test_identity_over_its_cap_refused_while_another_is_served(
        coordinator: Coordinator, pki: Pki) -> None:
    address = coordinator.config.listen
    async with contextlib.AsyncExitStack() as stack:
        bob = admin_pb2_grpc.AdminStub(
            await stack.enter_async_context(create_channel(address, pki.tls("viewer-bob"))))
        follows = [bob.StreamEvents(admin_pb2.StreamEventsRequest(follow=True))
                   for _ in range(CAP)]
        for follow in follows:
            stack.callback(follow.cancel)
        await until(lambda: coordinator.limits.slots.held("landlord://viewer/bob") == CAP)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bob.ListHosts(LIST_HOSTS, timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "landlord://viewer/bob" in (caught.value.details() or "")
        assert "max_calls_per_identity" in (caught.value.details() or "")

        # another identity is served, and fast
        took = [await listed_in(address, pki.tls("viewer-eve")) for _ in range(5)]
        assert max(took) < 1.0
        # one of bob's streams ends: bob is served again
        follows[0].cancel()
        await until(lambda: coordinator.limits.slots.held("landlord://viewer/bob") < CAP)
        await bob.ListHosts(LIST_HOSTS, timeout=5)


async def test_plain_text_half_open_connections_closed(etcd: EtcdProcess, prefix: str) -> None:
    """Without TLS (insecure, loopback) the HTTP/2 preface and the client's SETTINGS frame
    have the same time; half a preface is closed within it too."""
    c = Coordinator(coordinator_config(etcd, prefix, handshake_timeout=HANDSHAKE_TIMEOUT))
    await c.start()
    try:
        for first_bytes in (b"", b"PRI * HTTP/2.0\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
            took = await asyncio.to_thread(closed_after, c.port, first_bytes, 10.0)
            assert HANDSHAKE_TIMEOUT * 0.8 < took < HANDSHAKE_TIMEOUT + 2.0, first_bytes
    finally:
        await c.stop()
