"""gRPC channels and servers, made in one place.

This package is the only part of ``common`` that imports grpc. Every Landlord process
creates its servers and channels here, so transport security (mutual TLS, or plain text
on loopback with ``insecure = true``) and keepalive settings change without touching a
call site.
"""

from common.transport.expiry_watch import ExpiryWatch
from common.transport.factory import (
    ClientCertificates,
    ServerCertificates,
    bound_server,
    create_channel,
    create_server,
)
from common.transport.settings import (
    COORDINATOR_ADDRESS,
    COORDINATOR_PORT,
    ConnectionLimits,
    KeepaliveSettings,
    TlsSettings,
    is_loopback,
)

__all__ = [
    "COORDINATOR_ADDRESS",
    "COORDINATOR_PORT",
    "ClientCertificates",
    "ConnectionLimits",
    "ExpiryWatch",
    "KeepaliveSettings",
    "ServerCertificates",
    "TlsSettings",
    "bound_server",
    "create_channel",
    "create_server",
    "is_loopback",
]
