"""etcd for a local cluster: a private single-node etcd as a process, and the few reads and
deletes a launcher or test needs, through etcd's JSON gateway (no client library).

With ``tls`` (``EtcdTls.make`` issues a CA, etcd's server certificate and a client
certificate with common.pki), etcd serves its client port over TLS only and, with
``client_cert_auth``, refuses clients without a certificate its CA signed.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.identity import Identity, Role
from common.pki import LeafRequest, cert_pem, issue, issue_etcd_server, new_ca
from common.transport import TlsSettings
from local_cluster.processes import ClusterError, ManagedProcess, free_port, wait_for

__all__ = ["ETCD", "EtcdProcess", "EtcdTls", "delete_prefix"]

ETCD = "/usr/bin/etcd"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_range(prefix: str) -> dict[str, str]:
    key = prefix.encode()
    return {"key": _b64(key), "range_end": _b64(key[:-1] + bytes([key[-1] + 1]))}


@dataclass(frozen=True)
class EtcdTls:
    """etcd's TLS files (``server``) and a client's (``client``: the coordinator's)."""

    server: TlsSettings
    client: TlsSettings
    client_cert_auth: bool = True

    @classmethod
    def make(cls, directory: Path, client_id: str = "etcd-client",
             client_cert_auth: bool = True) -> EtcdTls:
        """A CA, etcd's certificate (localhost, 127.0.0.1) and a coordinator certificate
        ``client_id`` for its client, as PEM files in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        ca = new_ca("Landlord local etcd CA", now, days=30)
        server = issue_etcd_server(ca, "etcd", now, days=30)
        client = issue(ca, LeafRequest(Identity(Role.COORDINATOR, client_id), days=30), now)

        def write(name: str, data: bytes) -> str:
            path = directory / name
            path.write_bytes(data)
            path.chmod(0o600)
            return str(path)

        ca_file = write("etcd-ca.pem", cert_pem(ca.cert))
        return cls(
            server=TlsSettings(ca_file, write("etcd-server.pem", server.cert_pem),
                               write("etcd-server.key", server.key_pem)),
            client=TlsSettings(ca_file, write("etcd-client.pem", client.cert_pem),
                               write("etcd-client.key", client.key_pem)),
            client_cert_auth=client_cert_auth)

    def flags(self) -> list[str]:
        """etcd's client TLS flags. etcd 3.4 demands client certificates as soon as
        --trusted-ca-file is given, so without ``client_cert_auth`` that flag is left out."""
        flags = ["--cert-file", self.server.cert_file, "--key-file", self.server.key_file]
        if not self.client_cert_auth:
            return flags
        return [*flags, "--trusted-ca-file", self.server.ca_file, "--client-cert-auth"]

    def context(self) -> ssl.SSLContext:
        """A client context holding the client certificate (for the JSON gateway)."""
        context = ssl.create_default_context(cafile=self.client.ca_file)
        context.load_cert_chain(self.client.cert_file, self.client.key_file)
        return context

    def coordinator_settings(self) -> dict[str, str]:
        """The coordinator settings that reach this etcd."""
        return {"etcd_ca_file": self.client.ca_file, "etcd_cert_file": self.client.cert_file,
                "etcd_key_file": self.client.key_file}


def _call(endpoint: str, path: str, body: dict[str, Any] | None = None,
          tls: EtcdTls | None = None, timeout: float = 5) -> dict[str, Any]:
    """POST ``body`` to the JSON gateway (GET without one); over TLS when ``tls``."""
    scheme = "https" if tls else "http"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{scheme}://{endpoint}/{path}", data=data,
                                     method="GET" if body is None else "POST")
    try:
        reply = urllib.request.urlopen(request, timeout=timeout,
                                       context=tls.context() if tls else None)
    except urllib.error.HTTPError as exc:  # /health answers 503 while unhealthy
        reply = exc
    with reply:
        return dict(json.loads(reply.read() or b"{}"))


def delete_prefix(endpoint: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a shared etcd, cleared before a cluster starts)."""
    try:
        _call(endpoint, "v3/kv/deleterange", _prefix_range(prefix))
    except OSError as exc:
        raise ClusterError(f"etcd at {endpoint} is not reachable ({exc}); run `make setup`"
                           ) from None


class EtcdProcess(ManagedProcess):
    """A private single-node etcd on free loopback ports; it can be stopped and started
    again on the same ports and data."""

    program = ETCD

    def __init__(self, workdir: Path, name: str = "etcd", tls: EtcdTls | None = None) -> None:
        super().__init__(name, workdir)
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"{name}-data"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The endpoint with its scheme (https:// when TLS is on)."""
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def start(self, timeout: float = 20.0) -> EtcdProcess:
        client, peer = self.url, f"http://127.0.0.1:{self.peer_port}"
        self.spawn([ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"{self.name}={peer}", "--log-level", "warn",
                    *(self.tls.flags() if self.tls else [])])
        wait_for(self.healthy, timeout, f"etcd on {self.endpoint}")
        return self

    def healthy(self) -> bool:
        if not self.running:
            raise ClusterError(f"etcd exited:\n{self.log_tail()}")
        found = _call(self.endpoint, "health", tls=self.tls, timeout=1)
        return bool(found.get("health") == "true")

    def count_revision(self) -> int:
        """The store revision (every write bumps it)."""
        reply = _call(self.endpoint, "v3/kv/range", {"key": "AA==", "count_only": True},
                      self.tls)
        return int(reply["header"]["revision"])

    def _range(self, prefix: str) -> list[dict[str, Any]]:
        return list(_call(self.endpoint, "v3/kv/range", _prefix_range(prefix), self.tls)
                    .get("kvs", []))

    def dump(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value (for "nothing changed" checks)."""
        return {base64.b64decode(kv["key"]).decode():
                base64.b64decode(kv.get("value", "")).decode() for kv in self._range(prefix)}

    def count(self, prefix: str) -> tuple[int, int]:
        """(number of keys under ``prefix``, the store revision) in one read."""
        reply = _call(self.endpoint, "v3/kv/range",
                      {**_prefix_range(prefix), "count_only": True}, self.tls)
        return int(reply.get("count", 0)), int(reply["header"]["revision"])

    def changed_since(self, prefix: str, revision: int) -> dict[str, tuple[int, str]]:
        """Keys under ``prefix`` written after ``revision``: key -> (create revision, value).
        With ``count()``, what a short window changed, without reading every key."""
        reply = _call(self.endpoint, "v3/kv/range",
                      {**_prefix_range(prefix), "min_mod_revision": revision + 1}, self.tls)
        return {base64.b64decode(kv["key"]).decode():
                (int(kv["create_revision"]), base64.b64decode(kv.get("value", "")).decode())
                for kv in reply.get("kvs", [])}

    def revisions(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its mod revision (a write changes one)."""
        return {base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"])
                for kv in self._range(prefix)}
