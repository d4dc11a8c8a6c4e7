"""Create grpc.aio servers and channels with one set of TLS and keepalive settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from common.pki import load_certificate, load_private_key
from common.transport.settings import KeepaliveSettings, TlsSettings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ServerCertificates",
    "bound_server",
    "create_channel",
    "create_server",
]

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Largest message either side accepts (a full-state Register of a busy host fits)."""

Option = tuple[str, Any]


def create_server(
    keepalive: KeepaliveSettings | None = None,
    options: Sequence[Option] = (),
    interceptors: Sequence[Any] = (),
) -> Any:
    """A grpc.aio server with keepalive and message-size options; add ports with bound_server.

    ``interceptors`` are grpc.aio server interceptors (coordinator/api/authz_interceptor.py).
    """
    settings = keepalive or KeepaliveSettings()
    return grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            *settings.server_options(),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *options,
        ]
    )


class ServerCertificates:
    """A server's TLS files that ``reload()`` re-reads without dropping connections.

    grpc's dynamic server credentials ask ``_fetch`` at each new TLS handshake; it answers
    the configuration read by the last ``reload()`` once, then None (unchanged). Open
    connections and their streams keep the certificate they were made with.
    """

    def __init__(self, tls: TlsSettings) -> None:
        if not tls.cert_file:
            raise InvalidArgument("a TLS server needs cert_file and key_file")
        self._tls = tls
        self._pending: Any = None

    def _configuration(self) -> Any:
        ca, key, cert = self._tls.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> None:
        """Read the files now and check that they are a certificate and its key (else
        InvalidArgument or FailedPrecondition, and the served ones stay); the next handshake
        uses them."""
        try:
            _, key, cert = self._tls.read()
        except OSError as exc:
            raise FailedPrecondition(f"cannot read the server's TLS files: {exc}") from None
        assert key is not None and cert is not None
        if load_private_key(key, self._tls.key_file).public_key() != \
                load_certificate(cert, self._tls.cert_file).public_key():
            raise InvalidArgument(f"{self._tls.key_file} is not the key of {self._tls.cert_file}")
        self._pending = self._configuration()

    def _fetch(self) -> Any:
        pending, self._pending = self._pending, None
        return pending

    def credentials(self) -> Any:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch,
            require_client_authentication=bool(self._tls.ca_file)
            and self._tls.require_client_auth)


def bound_server(server: Any, address: str, tls: TlsSettings | None = None,
                 certificates: ServerCertificates | None = None) -> int:
    """Listen on ``address`` (``host:port``; port 0 picks one) and return the port bound.

    With ``certificates`` the TLS files are theirs and reloadable; else ``tls``'s, read once.
    """
    tls = tls or TlsSettings()
    if certificates is not None:
        port = server.add_secure_port(address, certificates.credentials())
    elif tls.cert_file:
        ca, key, cert = tls.read()
        assert key is not None and cert is not None
        credentials = grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=ca,
            require_client_auth=bool(ca) and tls.require_client_auth,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if not port:
        raise Unavailable(f"cannot listen on {address}", address=address)
    return int(port)


def create_channel(
    target: str,
    tls: TlsSettings | None = None,
    keepalive: KeepaliveSettings | None = None,
    options: Sequence[Option] = (),
) -> Any:
    """A grpc.aio channel to ``target`` (``host:port``), secure when TLS is configured."""
    if not target or ":" not in target:
        raise InvalidArgument(f"address {target!r} is not host:port", address=target)
    tls = tls or TlsSettings()
    settings = keepalive or KeepaliveSettings()
    all_options: list[Option] = [
        *settings.client_options(),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *options,
    ]
    if not tls.enabled:
        return grpc.aio.insecure_channel(target, options=all_options)
    ca, key, cert = tls.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    if tls.server_name:
        all_options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, credentials, options=all_options)
