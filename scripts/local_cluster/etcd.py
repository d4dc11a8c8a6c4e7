"""etcd for a local cluster: a private single-node etcd as a process, and the few reads and
deletes a launcher or test needs, through etcd's JSON gateway (no client library)."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

from local_cluster.load import get_json
from local_cluster.processes import ClusterError, ManagedProcess, free_port, wait_for

__all__ = ["ETCD", "EtcdProcess", "delete_prefix"]

ETCD = "/usr/bin/etcd"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_range(prefix: str) -> dict[str, str]:
    key = prefix.encode()
    return {"key": _b64(key), "range_end": _b64(key[:-1] + bytes([key[-1] + 1]))}


def _call(endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{endpoint}/v3/{path}",
                                     data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return dict(json.loads(reply.read()))


def delete_prefix(endpoint: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a shared etcd, cleared before a cluster starts)."""
    try:
        _call(endpoint, "kv/deleterange", _prefix_range(prefix))
    except OSError as exc:
        raise ClusterError(f"etcd at {endpoint} is not reachable ({exc}); run `make setup`"
                           ) from None


class EtcdProcess(ManagedProcess):
    """A private single-node etcd on free loopback ports; it can be stopped and started
    again on the same ports and data."""

    program = ETCD

    def __init__(self, workdir: Path, name: str = "etcd") -> None:
        super().__init__(name, workdir)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"{name}-data"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> EtcdProcess:
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        self.spawn([ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"{self.name}={peer}", "--log-level", "warn"])
        wait_for(self.healthy, timeout, f"etcd on {self.endpoint}")
        return self

    def healthy(self) -> bool:
        if not self.running:
            raise ClusterError(f"etcd exited:\n{self.log_tail()}")
        host, _, port = self.endpoint.rpartition(":")
        _, found = get_json(host, int(port), "/health", timeout=1)  # 503 while unhealthy
        return bool(found.get("health") == "true")

    def count_revision(self) -> int:
        """The store revision (every write bumps it)."""
        reply = _call(self.endpoint, "kv/range", {"key": "AA==", "count_only": True})
        return int(reply["header"]["revision"])

    def _range(self, prefix: str) -> list[dict[str, Any]]:
        return list(_call(self.endpoint, "kv/range", _prefix_range(prefix)).get("kvs", []))

    def dump(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value (for "nothing changed" checks)."""
        return {base64.b64decode(kv["key"]).decode():
                base64.b64decode(kv.get("value", "")).decode() for kv in self._range(prefix)}

    def revisions(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its mod revision (a write changes one)."""
        return {base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"])
                for kv in self._range(prefix)}
