"""Create grpc.aio servers and channels with one set of TLS and keepalive settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from common.pki import load_certificate, load_certificates, load_private_key
from common.transport.settings import ConnectionLimits, KeepaliveSettings, TlsSettings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ClientCertificates",
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
    limits: ConnectionLimits | None = None,
) -> Any:
    """A grpc.aio server with keepalive, connection-limit and message-size options; add
    ports with bound_server.

    ``interceptors`` are grpc.aio server interceptors (coordinator/api/authz_interceptor.py).
    """
    settings = keepalive or KeepaliveSettings()
    return grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            *settings.server_options(),
            *(limits or ConnectionLimits()).server_options(),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *options,
        ]
    )


TlsFiles = tuple[bytes | None, bytes | None, bytes | None]
"""(ca, key, cert) PEM contents, as TlsSettings.read answers them."""


def read_checked(tls: TlsSettings, side: str) -> TlsFiles:
    """Read ``tls``'s files and check that they are a CA bundle, a certificate and its key
    (FailedPrecondition when unreadable, InvalidArgument when wrong)."""
    try:
        ca, key, cert = tls.read()
    except OSError as exc:
        raise FailedPrecondition(f"cannot read the {side}'s TLS files: {exc}") from None
    if ca is not None:
        load_certificates(ca, tls.ca_file)
    if key is not None and cert is not None and \
            load_private_key(key, tls.key_file).public_key() != \
            load_certificate(cert, tls.cert_file).public_key():
        raise InvalidArgument(f"{tls.key_file} is not the key of {tls.cert_file}")
    return ca, key, cert


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
        self._files = read_checked(tls, "server")

    @property
    def certificate(self) -> bytes | None:
        """The certificate PEM served to new connections (read at start or last reload)."""
        return self._files[2]

    @staticmethod
    def _configuration(files: TlsFiles) -> Any:
        ca, key, cert = files
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> None:
        """Read the files now and check that they are a certificate and its key (else
        InvalidArgument or FailedPrecondition, and the served ones stay); the next handshake
        uses them."""
        files = read_checked(self._tls, "server")
        self._pending = self._configuration(files)
        self._files = files

    def _fetch(self) -> Any:
        pending, self._pending = self._pending, None
        return pending

    def credentials(self) -> Any:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._files), self._fetch,
            require_client_authentication=bool(self._tls.ca_file)
            and self._tls.require_client_auth)


class ClientCertificates:
    """A client's TLS files, read and checked once; ``reload()`` reads them again.

    Channels made after a reload use the new files; a channel already open keeps its TLS
    session (and its streams). A reload that fails keeps the files read before.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self.tls = tls
        self._files = read_checked(tls, "client")

    @property
    def certificate(self) -> bytes | None:
        """This side's certificate PEM that new channels present."""
        return self._files[2]

    def reload(self) -> None:
        """Read and check the files (InvalidArgument or FailedPrecondition: old ones stay)."""
        self._files = read_checked(self.tls, "client")

    def credentials(self) -> Any:
        ca, key, cert = self._files
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                            certificate_chain=cert)


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
    certificates: ClientCertificates | None = None,
) -> Any:
    """A grpc.aio channel to ``target`` (``host:port``), secure when TLS is configured.

    With ``certificates`` the TLS files are theirs (read at their last reload) and ``tls``
    defaults to their settings; else ``tls``'s files are read now.
    """
    if not target or ":" not in target:
        raise InvalidArgument(f"address {target!r} is not host:port", address=target)
    tls = tls or (certificates.tls if certificates is not None else TlsSettings())
    settings = keepalive or KeepaliveSettings()
    all_options: list[Option] = [
        *settings.client_options(),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *options,
    ]
    if not tls.enabled:
        return grpc.aio.insecure_channel(target, options=all_options)
    if certificates is not None:
        credentials = certificates.credentials()
    else:
        ca, key, cert = tls.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
    if tls.server_name:
        all_options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, credentials, options=all_options)
