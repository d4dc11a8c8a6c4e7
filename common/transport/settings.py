"""Transport settings: TLS material and keepalive, as frozen dataclasses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidArgument

__all__ = ["COORDINATOR_ADDRESS", "COORDINATOR_PORT", "ConnectionLimits", "KeepaliveSettings",
           "TlsSettings", "is_loopback"]

COORDINATOR_PORT = 7400
"""The coordinator's gRPC port: where it listens by default and where the CLI looks."""
COORDINATOR_ADDRESS = f"127.0.0.1:{COORDINATOR_PORT}"
"""The coordinator's default listen address, and the CLI's default target."""


def is_loopback(address: str) -> bool:
    """Whether ``host[:port]`` names this machine (127.0.0.0/8, ::1, localhost): the only
    addresses plain text (``insecure = true``) may use."""
    host = address.partition("://")[2] or address
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsSettings:
    """Where the PEM files are; all empty means insecure (plain HTTP/2 on loopback)."""

    ca_file: str = ""
    """CA bundle that signs the peer's certificate (client: the server's; server: clients')."""
    cert_file: str = ""
    """This side's certificate chain."""
    key_file: str = ""
    """This side's private key."""
    require_client_auth: bool = True
    """Server side: refuse clients without a certificate signed by ``ca_file`` (mutual TLS)."""
    server_name: str = ""
    """Client side: name to check in the server certificate instead of the target host."""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise InvalidArgument(
                "TLS needs both cert_file and key_file, or neither (insecure)",
                cert_file=self.cert_file,
                key_file=self.key_file,
            )
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise InvalidArgument(f"TLS {name} {path!r} does not exist", field=name)

    @property
    def enabled(self) -> bool:
        """True when this side presents a certificate or checks the peer's."""
        return bool(self.cert_file or self.ca_file)

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, key, cert) file contents; None for what is not configured."""

        def load(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return load(self.ca_file), load(self.key_file), load(self.cert_file)


@dataclass(frozen=True)
class KeepaliveSettings:
    """HTTP/2 keepalive (see grpc/grpc doc/keepalive.md).

    The client's ping interval must stay at or above the server's minimum, or the server
    answers GOAWAY "too many pings".
    """

    server_ping_interval_ms: int = 20_000
    """Server pings an idle client this often."""
    ping_timeout_ms: int = 10_000
    """A ping unanswered for this long closes the connection."""
    server_min_ping_interval_ms: int = 10_000
    """Pings from a client closer together than this are refused."""
    client_ping_interval_ms: int = 30_000
    """Client pings the server this often."""
    max_connection_age_ms: int = 0
    """Server closes connections older than this (0 = never; streams are long-lived)."""

    def __post_init__(self) -> None:
        if self.client_ping_interval_ms < self.server_min_ping_interval_ms:
            raise InvalidArgument(
                "client keepalive interval must be >= the server's minimum ping interval",
                client=self.client_ping_interval_ms,
                server_min=self.server_min_ping_interval_ms,
            )

    def server_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.keepalive_time_ms", self.server_ping_interval_ms),
            ("grpc.keepalive_timeout_ms", self.ping_timeout_ms),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", self.server_min_ping_interval_ms),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if self.max_connection_age_ms:
            options.append(("grpc.max_connection_age_ms", self.max_connection_age_ms))
        return options

    def client_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", self.client_ping_interval_ms),
            ("grpc.keepalive_timeout_ms", self.ping_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
        ]


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server's connections may hold, so that clients that connect and then stall
    (no TLS handshake, half an HTTP/2 preface, no calls) cannot pile up descriptors.

    grpc closes a connection whose TLS handshake and HTTP/2 preface (with the client's
    SETTINGS) are not done within ``handshake_timeout_ms``, and one with no call in progress
    for ``idle_timeout_ms`` (GOAWAY; a client's channel reconnects when it next calls).
    """

    handshake_timeout_ms: int = 10_000
    """TLS handshake plus HTTP/2 preface must be done within this (grpc's default: 120 s)."""
    idle_timeout_ms: int = 300_000
    """A connection with no call in progress is closed after this (0 = never)."""
    max_connections: int = 16_384
    """Connections open at once; more are closed as soon as they are accepted (0 = no cap)."""
    max_streams_per_connection: int = 100
    """Calls (HTTP/2 streams) one connection may have open at once; a client queues more."""

    def __post_init__(self) -> None:
        for name in ("handshake_timeout_ms", "max_streams_per_connection"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be at least 1", field=name)
        for name in ("idle_timeout_ms", "max_connections"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must not be negative", field=name)

    def server_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.server_handshake_timeout_ms", self.handshake_timeout_ms),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
        ]
        if self.idle_timeout_ms:
            options.append(("grpc.max_connection_idle_ms", self.idle_timeout_ms))
        if self.max_connections:
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        return options
