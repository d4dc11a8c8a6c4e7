"""The two Landlord daemons as a user starts them: the console scripts installed next to this
Python (.venv/bin), or in another ``bin_dir`` (a previous release's venv,
local_cluster/releases.py), ``landlord-coordinator`` with a TOML file and ``landlord-agent``
with LANDLORD_AGENT_* variables. An agent's containers and HAProxy outlive it by design; the
helpers here remove them (containers by label)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import grpc

from agent.dataplane import HaproxyPaths
from agent.dataplane.haproxy_process import HaproxyProcess
from agent.limits.veth_shaping import ifb_owner, remove_owned_ifbs
from common.errors import FailedPrecondition
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import TlsSettings
from local_cluster.pki import admin_channel
from local_cluster.processes import (
    ClusterError,
    ManagedProcess,
    free_port,
    free_port_on_all,
    wait_for,
)

__all__ = ["AGENT_SETTINGS", "BIN", "COORDINATOR_SETTINGS", "AgentProcess",
           "CoordinatorProcess", "remove_containers", "remove_host_ifbs", "stop_haproxy",
           "unmount_bpffs"]

BIN = Path(sys.executable).parent
COORDINATOR_SETTINGS: dict[str, Any] = {
    # short timings for a cluster on one machine; every one is an ordinary setting
    "leader_lease_ttl": 3,
    "heartbeat_interval": 1.0,
    "liveness_grace": 3.0,
    "report_interval": 0.2,
    "shutdown_grace": 2.0,
    "log_level": "INFO",
}
AGENT_SETTINGS = {
    "stop_grace": "3",
    "crash_delay": "0.5",
    "startup_probe_interval": "0.1",
    "monitor_interval": "2",
    "bandwidth": "true",  # network limits enforced (bridged instances: both ways)
    "log_format": "text",
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


class CoordinatorProcess(ManagedProcess):
    """``landlord-coordinator --config <workdir>/<name>.toml``; listens on 127.0.0.1 at
    ``preferred_port`` when it is free, else on a free port. ``client_tls`` (an admin's
    files) is how the launcher calls it; None: it was started with ``insecure = true``."""

    program = "landlord-coordinator"

    def __init__(self, workdir: Path, name: str, etcd_endpoint: str, prefix: str,
                 settings: Mapping[str, Any] | None = None, preferred_port: int = 0,
                 bin_dir: Path = BIN, client_tls: TlsSettings | None = None) -> None:
        super().__init__(name, workdir)
        self.bin_dir = bin_dir
        self.client_tls = client_tls
        self.port = free_port_on_all(["127.0.0.1"], preferred_port)
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_address = f"127.0.0.1:{free_port()}"
        """Its Prometheus endpoint (http://<this>/metrics); each process has its own."""
        self.config_path = workdir / f"{name}.toml"
        self.settings: dict[str, Any] = {
            "id": name, "listen": self.address, "etcd_endpoints": [etcd_endpoint],
            "etcd_prefix": prefix, **COORDINATOR_SETTINGS, **(settings or {})}

    def write_config(self) -> None:
        values = dict(self.settings)
        if self.bin_dir == BIN:  # settings a release before 0.2.0 does not know
            values = {"metrics_listen": self.metrics_address, **values}
            if self.client_tls is None:
                values["insecure"] = True  # plain text needs saying so
        self.config_path.write_text("".join(f"{k} = {toml_value(v)}\n"
                                            for k, v in values.items()))

    def start(self, timeout: float = 30.0) -> CoordinatorProcess:
        self.write_config()
        self.spawn([str(self.bin_dir / self.program), "--config", str(self.config_path)])
        wait_for(self.serving, timeout, f"coordinator {self.name} serving", interval=0.1)
        return self

    def serving(self) -> bool:
        if not self.running:
            raise ClusterError(f"{self.name} exited:\n{self.log_tail()}")
        self.leader_info()
        return True

    def channel(self) -> grpc.Channel:
        return admin_channel(self.address, self.client_tls)

    def leader_info(self) -> admin_pb2.GetLeaderResponse:
        with self.channel() as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            reply: admin_pb2.GetLeaderResponse = stub.GetLeader(admin_pb2.GetLeaderRequest(),
                                                                timeout=2)
            return reply


class AgentProcess(ManagedProcess):
    """``landlord-agent`` for one simulated host: its own loopback address, data directory
    ``<workdir>/<host_id>`` (emptied at the first start) and HAProxy. ``labels`` go on every
    container it starts. ``bin_dir`` holds the executable; changing it between a stop and
    the next start upgrades (or downgrades) the host's agent in place."""

    program = "landlord-agent"

    def __init__(self, workdir: Path, host_id: str, address: str, coordinators: Sequence[str],
                 building: str, labels: Sequence[str],
                 settings: Mapping[str, str] | None = None, bin_dir: Path = BIN) -> None:
        super().__init__(host_id, workdir)
        self.bin_dir = bin_dir
        self.host_id = host_id
        self.address = address
        self.labels = tuple(labels)
        self.data_dir = workdir / host_id
        self.metrics_address = f"127.0.0.1:{free_port()}"
        """Its Prometheus endpoint and /healthz."""
        self.haproxy_metrics_address = f"127.0.0.1:{free_port()}"
        """Its HAProxy's own Prometheus exporter (http://<this>/metrics): each host's
        HAProxy has its own port, as the agents on one machine would fight over one."""
        self.settings = {
            "host_id": host_id, "advertise_address": address, "building": building,
            "coordinators": ",".join(coordinators), "data_dir": str(self.data_dir),
            "run_dir": str(self.data_dir / "run"), "labels": ",".join(labels),
            **AGENT_SETTINGS, **(settings or {}),
        }

    @property
    def env(self) -> dict[str, str]:
        """LANDLORD_AGENT_* of ``settings``; without TLS files, this release's agent is told
        ``insecure`` (a release before 0.2.0 has no such setting, nor the metrics ones)."""
        values = dict(self.settings)
        if self.bin_dir == BIN:  # settings a release before 0.2.0 does not know
            values = {"metrics_listen": self.metrics_address,
                      "haproxy_metrics_listen": self.haproxy_metrics_address, **values}
            if "tls_cert_file" not in values:
                values["insecure"] = "true"
        return {f"LANDLORD_AGENT_{k.upper()}": v for k, v in values.items()}

    def start(self) -> AgentProcess:
        if not self._started_once:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.spawn([str(self.bin_dir / self.program)], self.env)
        return self

    @property
    def haproxy(self) -> HaproxyProcess:
        return HaproxyProcess(HaproxyPaths(self.data_dir / "haproxy"))

    def shutdown_haproxy(self) -> None:
        stop_haproxy(self.data_dir)

    def remove_containers(self) -> int:
        """Remove this host's containers (a host that is gone); how many there were."""
        removed = len(remove_containers([*self.labels, f"landlord.host={self.host_id}"]))
        self.remove_ifbs()
        return removed

    def remove_ifbs(self) -> list[str]:
        return remove_host_ifbs(self.host_id)

    def unmount(self) -> bool:
        return unmount_bpffs(self.data_dir)


def stop_haproxy(agent_data_dir: Path) -> bool:
    """Stop the HAProxy an agent with this data directory left running; whether one ran."""
    haproxy = HaproxyProcess(HaproxyPaths(agent_data_dir / "haproxy"))
    if not haproxy.processes():
        return False
    asyncio.run(haproxy.stop())
    return True


def remove_host_ifbs(host_id: str) -> list[str]:
    """Delete the ifb devices host ``host_id``'s limited instances left (their containers
    are gone; an agent deletes them only when it releases an instance itself); their names."""
    with contextlib.suppress(FailedPrecondition, OSError):
        return remove_owned_ifbs(ifb_owner(host_id, ""))
    return []


def unmount_bpffs(agent_data_dir: Path) -> bool:
    """Unmount the bpf filesystem a stopped agent mounted in its run directory (to pin the
    classifier of host-network egress), so its work directory can be removed; whether one
    was mounted."""
    bpffs = agent_data_dir / "run" / "bpf"
    if not os.path.ismount(bpffs):
        return False
    return subprocess.run(["umount", str(bpffs)], capture_output=True, check=False,
                          timeout=30).returncode == 0


def remove_containers(labels: Sequence[str]) -> list[str]:
    """Remove every container (running or not) carrying all of ``labels``; their names."""
    client = docker.from_env(timeout=60)
    try:
        # low-level list: no per-container inspect that a concurrent removal could fail
        found = client.api.containers(all=True, filters={"label": list(labels)})
        for container in found:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container["Id"], force=True)
        return [str((c.get("Names") or [c["Id"]])[0]).lstrip("/") for c in found]
    finally:
        client.close()
