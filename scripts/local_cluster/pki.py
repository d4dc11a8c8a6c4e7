"""Certificates of a local cluster, made at set-up as `landlord certs` makes them.

One CA directory (coordinator/pki_files.py's layout: ``ca.pem``, ``ca.key``, ``crl.pem``,
``<role>-<name>.pem``/``.key``) signs every coordinator's certificate, every agent's host
certificate and one admin's for the CLI and the launcher's own calls. etcd trusts a CA of its
own (``etcd-ca/``: etcd's server certificate and each coordinator's etcd client
certificate), as docs/security.md asks: etcd checks only that its CA signed a client, so
with one CA for both any host's certificate could write the cluster's state. Files that
exist are kept, so a cluster started again in the same work directory (`make demo` twice)
keeps its CAs and the shell lines printed for it stay true.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import grpc

from common.identity import Identity, Role
from common.pki import (
    LeafRequest,
    issue,
    issue_etcd_server,
)
from common.transport import TlsSettings
from coordinator.pki_files import CaFiles
from local_cluster.etcd import EtcdTls

__all__ = ["ADMIN", "ClusterPki", "admin_channel"]

ADMIN = "operator"
"""The admin identity the launcher and its CLI calls use (``landlord://admin/operator``)."""
DAYS = 365


class ClusterPki:
    """A CA directory and the certificates a local cluster needs, issued on first use."""

    def __init__(self, root: Path) -> None:
        self.files = CaFiles(root)
        self.etcd_files = CaFiles(root / "etcd-ca")

    @property
    def root(self) -> Path:
        return self.files.root

    def ensure(self) -> ClusterPki:
        """Make the CAs unless the directory holds them."""
        for files, what in ((self.files, "CA"), (self.etcd_files, "etcd CA")):
            if not files.key.exists():
                files.create(f"Landlord local {what} {secrets.token_hex(4)}",
                             datetime.now(UTC), days=3650)
        return self

    def _leaf(self, role: Role, name: str, *, server: bool = False,
              files: CaFiles | None = None) -> TlsSettings:
        files = files or self.files
        cert, key = files.leaf(str(role), name)
        if not (cert.exists() and key.exists()):
            sans: tuple[tuple[str, ...], tuple[str, ...]] = (
                (("localhost",), ("127.0.0.1",)) if server else ((), ()))
            request = LeafRequest(Identity(role, name), DAYS, *sans)
            files.write_leaf(issue(files.load(), request, datetime.now(UTC)), cert, key)
        return TlsSettings(str(files.cert), str(cert), str(key))

    def coordinator(self, name: str) -> TlsSettings:
        """A coordinator's files (server certificate for localhost and 127.0.0.1)."""
        return self._leaf(Role.COORDINATOR, name, server=True)

    def agent(self, host_id: str) -> TlsSettings:
        """Host ``host_id``'s files (``landlord://host/<host_id>``)."""
        return self._leaf(Role.HOST, host_id)

    def admin(self, name: str = ADMIN) -> TlsSettings:
        return self._leaf(Role.ADMIN, name)

    def viewer(self, name: str) -> TlsSettings:
        return self._leaf(Role.VIEWER, name)

    def etcd_client(self, name: str) -> TlsSettings:
        """Coordinator ``name``'s etcd client files, from the etcd CA."""
        return self._leaf(Role.COORDINATOR, name, files=self.etcd_files)

    def etcd(self, client: str = "etcd-client") -> EtcdTls:
        """etcd's server files and an etcd client ``client``'s (the launcher's own)."""
        files = self.etcd_files
        cert, key = files.leaf("etcd", "etcd")
        if not (cert.exists() and key.exists()):
            files.write_leaf(issue_etcd_server(files.load(), "etcd", datetime.now(UTC), DAYS),
                             cert, key)
        server = TlsSettings(str(files.cert), str(cert), str(key))
        return EtcdTls(server=server, client=self.etcd_client(client))

    def coordinator_settings(self, name: str) -> dict[str, str]:
        """Coordinator ``name``'s TLS settings: its certificate, the CA bundle and the CRL
        for its clients; its etcd client certificate and the etcd CA for etcd."""
        tls, etcd = self.coordinator(name), self.etcd_client(name)
        return {"tls_ca_file": tls.ca_file, "tls_cert_file": tls.cert_file,
                "tls_key_file": tls.key_file, "tls_crl_file": str(self.files.crl),
                "etcd_ca_file": etcd.ca_file, "etcd_cert_file": etcd.cert_file,
                "etcd_key_file": etcd.key_file}

    def agent_settings(self, host_id: str) -> dict[str, str]:
        tls = self.agent(host_id)
        return {"tls_ca_file": tls.ca_file, "tls_cert_file": tls.cert_file,
                "tls_key_file": tls.key_file}

    def cli_env(self, name: str = ADMIN) -> dict[str, str]:
        """The environment that points the `landlord` CLI's TLS at admin ``name``."""
        tls = self.admin(name)
        return {"LANDLORD_TLS_CA": tls.ca_file, "LANDLORD_TLS_CERT": tls.cert_file,
                "LANDLORD_TLS_KEY": tls.key_file}


def admin_channel(address: str, tls: TlsSettings | None) -> grpc.Channel:
    """A blocking channel to a coordinator: mutual TLS with ``tls`` (an admin's files), or
    plain text when None (a cluster started with ``tls=False``)."""
    if tls is None:
        return grpc.insecure_channel(address)
    ca, key, cert = tls.read()
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert))
