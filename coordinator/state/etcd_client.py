"""How the coordinator opens gRPC channels to etcd: plain, or TLS with a client certificate.

aetcd 1.0.0 always opens ``rpc.insecure_channel`` in ``Client.connect`` (upstream
martyanov/aetcd#37 and PR #18 are open, no release has TLS). ``TlsClient`` is aetcd's
``Client`` whose ``connect`` opens ``grpc.aio.secure_channel`` instead; everything else
(stubs, watcher, errors) is aetcd's. The blocking lease keeper (``BlockingLeaseClient``)
uses ``blocking_channel`` for the same choice on the synchronous API.

Whether an endpoint uses TLS: ``https://`` always, ``http://`` never, ``host:port`` when
TLS files are configured (coordinator/config.py checks the combinations).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.rpc import LeaseKeepAliveRequest, rpc_pb2_grpc

from common.errors import Unavailable
from common.transport import TlsSettings
from coordinator.config import split_etcd_endpoint

__all__ = ["CHANNEL_OPTIONS", "BlockingLeaseClient", "EtcdTarget", "TlsClient", "blocking_channel",
           "etcd_client", "etcd_target"]

CHANNEL_OPTIONS = {
    # a restarted etcd is found again within a second or two, not grpc's default 120 s
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
}


@dataclass(frozen=True)
class EtcdTarget:
    """One etcd endpoint as dialled: ``host:port`` and whether over TLS."""

    address: str
    secure: bool

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


def etcd_target(endpoint: str, tls: TlsSettings) -> EtcdTarget:
    scheme, address = split_etcd_endpoint(endpoint)
    secure = scheme == "https" or (scheme == "" and tls.enabled)
    return EtcdTarget(address, secure)


def _credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    ca, key, cert = tls.read()  # read at each connect: renewed files are picked up
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


class TlsClient(aetcd.Client):  # type: ignore[misc]  # aetcd has no type hints
    """aetcd's client over a TLS channel (CA, client certificate and key from ``tls``).

    ``connect`` follows aetcd 1.0.0's own, minus user/password auth (not used here: etcd
    checks the client certificate).
    """

    _connected: asyncio.Event
    _is_connecting: bool

    def __init__(self, tls: TlsSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task is connecting: wait for it, as aetcd does
            await aetcd.Client.connect(self)
            return
        try:
            self._is_connecting = True
            self.channel = grpc.aio.secure_channel(
                f"{self._host}:{self._port}", _credentials(self._tls),
                options=list(self._options.items()))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def etcd_client(target: EtcdTarget, tls: TlsSettings, timeout: float,
                options: Mapping[str, Any]) -> aetcd.Client:
    """An aetcd client for ``target``: ``TlsClient`` when it is secure."""
    common: dict[str, Any] = {
        "host": target.host, "port": target.port, "timeout": timeout,
        "options": dict(options), "connect_wait_timeout": int(max(1, timeout))}
    if target.secure:
        return TlsClient(tls, **common)
    return aetcd.Client(**common)


def blocking_channel(target: EtcdTarget, tls: TlsSettings, options: Mapping[str, Any]) -> Any:
    """A synchronous gRPC channel to ``target`` (for the lease keeper's own thread)."""
    if target.secure:
        return grpc.secure_channel(target.address, _credentials(tls),
                                   options=list(options.items()))
    return grpc.insecure_channel(target.address, options=list(options.items()))


class BlockingLeaseClient:
    """Lease keepalive over a blocking gRPC channel, for a thread of its own.

    grpc.aio serves one event loop per process, so a second thread cannot run aetcd; the
    lease keeper uses the plain (synchronous) gRPC API with aetcd's generated stubs.
    """

    def __init__(self, endpoints: Sequence[str], timeout: float,
                 tls: TlsSettings | None = None) -> None:
        self._tls = tls or TlsSettings()
        self._endpoints = [etcd_target(e, self._tls) for e in endpoints]
        self._current = 0
        self._timeout = timeout
        self._channel: Any = None
        self._stub: Any = None

    def _connect(self) -> None:
        if self._channel is None:
            target = self._endpoints[self._current % len(self._endpoints)]
            self._channel = blocking_channel(target, self._tls, CHANNEL_OPTIONS)
            self._stub = rpc_pb2_grpc.LeaseStub(self._channel)

    def refresh(self, lease_id: int) -> int:
        """The remaining TTL (0: expired); Unavailable when etcd cannot be reached."""
        self._connect()
        try:
            for reply in self._stub.LeaseKeepAlive(
                iter([LeaseKeepAliveRequest(ID=lease_id)]), timeout=self._timeout
            ):
                return int(reply.TTL)
        except grpc.RpcError as exc:
            self.close()
            self._current += 1  # try the next endpoint next time
            raise Unavailable(f"etcd is unreachable (lease refresh): {exc.code().name}") from None
        return 0

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
