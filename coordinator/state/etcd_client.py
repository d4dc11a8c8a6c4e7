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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

from common.transport import TlsSettings
from coordinator.config import split_etcd_endpoint

__all__ = ["EtcdTarget", "TlsClient", "blocking_channel", "etcd_client", "etcd_target"]


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
