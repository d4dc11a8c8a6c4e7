"""A Landlord cluster on this machine: etcd, coordinators and agents as processes.

- ``ControlPlane``: a private etcd on free ports and coordinators, in one work directory (a
  temporary one, removed at ``close()``, unless given). With ``tls`` (the default) everything
  speaks mutual TLS as a production fleet does: the certificates are made at set-up in
  ``<workdir>/pki`` (local_cluster/pki.py), etcd requires client certificates, and the
  launcher calls coordinators as ``admin/operator`` (``pki.cli_env()`` points the CLI there).
  ``tls=False`` runs everything in plain text with ``insecure = true`` (a release before
  0.2.0 has no TLS for etcd).
- ``LocalCluster``: a control plane plus real agents (``landlord-agent``, Docker, HAProxy),
  one per simulated host on its own loopback address. Its name gives the label
  ``landlord.cluster=<name>`` that every container of its agents carries, so it removes
  exactly its own containers; ``host_prefix`` makes its host ids its own (an agent adopts
  every container labelled with its host id, so two clusters on one Docker must not share
  one).
- ``stop_recorded_cluster()``: stop a cluster another process started and left running,
  from the pid files in its work directory (`scripts/demo.py --down`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker

from common.gen.landlord.v1 import admin_pb2_grpc
from common.transport import TlsSettings
from local_cluster.daemons import (
    BIN,
    AgentProcess,
    CoordinatorProcess,
    remove_containers,
    remove_host_ifbs,
    stop_haproxy,
    unmount_bpffs,
)
from local_cluster.etcd import EtcdProcess
from local_cluster.pki import ClusterPki
from local_cluster.processes import (
    ManagedProcess,
    recorded_processes,
    stop_recorded,
    wait_for,
)

__all__ = ["CLUSTER_LABEL", "ControlPlane", "LocalCluster", "stop_recorded_cluster"]

CLUSTER_LABEL = "landlord.cluster"


class ControlPlane:
    """A private etcd and coordinators in one work directory, under key ``prefix``."""

    def __init__(self, name: str, *, workdir: Path | None = None, prefix: str = "",
                 coordinator_settings: Mapping[str, Any] | None = None, tls: bool = True
                 ) -> None:
        self.name = name
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix=f"landlord-{name}-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"/landlord-{name}"
        self.pki = ClusterPki(self.workdir / "pki").ensure() if tls else None
        self.etcd = EtcdProcess(self.workdir, tls=self.pki.etcd() if self.pki else None)
        self.coordinator_settings = dict(coordinator_settings or {})
        self.coordinators: list[CoordinatorProcess] = []

    @property
    def etcd_endpoint(self) -> str:
        """``https://...`` with TLS; plain ``host:port`` as every release reads it."""
        return self.etcd.url if self.etcd.tls else self.etcd.endpoint

    @property
    def client_tls(self) -> TlsSettings | None:
        """The admin identity's files the launcher calls with (None: plain text)."""
        return self.pki.admin() if self.pki else None

    def cli_env(self) -> dict[str, str]:
        """LANDLORD_TLS_* that let the `landlord` CLI in (empty without TLS)."""
        return self.pki.cli_env() if self.pki else {}

    @property
    def coordinator(self) -> CoordinatorProcess:
        """The first coordinator added."""
        return self.coordinators[0]

    def start_etcd(self) -> None:
        """A fresh etcd (an earlier run's data in the work directory is removed)."""
        shutil.rmtree(self.etcd.data_dir, ignore_errors=True)
        self.etcd.start()

    def add_coordinator(self, settings: Mapping[str, Any] | None = None, *, name: str = "",
                        preferred_port: int = 0, bin_dir: Path = BIN) -> CoordinatorProcess:
        """Start one more coordinator on this etcd prefix (``coord<n>`` unless named), from
        ``bin_dir`` (another release's venv, say)."""
        name = name or f"coord{len(self.coordinators) + 1}"
        tls = self.pki.coordinator_settings(name) if self.pki else {}
        coordinator = CoordinatorProcess(
            self.workdir, name, self.etcd_endpoint, self.prefix,
            {**tls, **self.coordinator_settings, **(settings or {})}, preferred_port,
            bin_dir, self.client_tls)
        self.coordinators.append(coordinator)
        return coordinator.start()

    def start(self, coordinators: int = 1, bin_dir: Path = BIN) -> ControlPlane:
        """etcd, then ``coordinators`` coordinators (from ``bin_dir``); the first one
        leads."""
        self.start_etcd()
        first = self.add_coordinator(bin_dir=bin_dir)
        wait_for(lambda: first.leader_info().this_is_leader, 30, "first coordinator leads",
                 interval=0.1)
        for _ in range(coordinators - 1):
            self.add_coordinator(bin_dir=bin_dir)
        return self

    def leader(self, timeout: float = 30.0) -> CoordinatorProcess:
        """The running coordinator that says it leads (waits up to ``timeout``)."""
        def find() -> CoordinatorProcess | None:
            for coordinator in self.coordinators:
                if coordinator.running and coordinator.leader_info().this_is_leader:
                    return coordinator
            return None

        found: CoordinatorProcess = wait_for(find, timeout, "a coordinator leading")
        return found

    @contextlib.contextmanager
    def admin(self, coordinator: CoordinatorProcess | None = None) -> Iterator[Any]:
        """An Admin stub on ``coordinator`` (default: the one leading now)."""
        target = coordinator or self.leader()
        with target.channel() as channel:
            yield admin_pb2_grpc.AdminStub(channel)

    def processes(self) -> list[ManagedProcess]:
        return [*self.coordinators]

    def exited(self) -> list[ManagedProcess]:
        """The processes started here that are not running any more."""
        return [p for p in self.processes() if not p.running]

    def logs(self, lines: int = 60) -> str:
        """The last ``lines`` of every process's log (shown when something failed)."""
        return "\n".join(f"--- {p.name}\n{p.log_tail(lines)}" for p in self.processes())

    def close(self) -> None:
        for coordinator in self.coordinators:
            coordinator.stop(10)
        self.etcd.stop(10)
        if self._tmp is not None:
            self._tmp.cleanup()


class LocalCluster(ControlPlane):
    """A control plane plus real agents. ``labels`` (KEY=VALUE) go on every container next
    to ``landlord.cluster=<name>``; ``host_prefix`` is put before every host name."""

    def __init__(self, name: str, *, labels: Sequence[str] = (), host_prefix: str = "",
                 agent_settings: Mapping[str, str] | None = None, **control_plane: Any) -> None:
        super().__init__(name, **control_plane)
        self.labels = (*labels, f"{CLUSTER_LABEL}={name}")
        self.host_prefix = host_prefix
        self.agent_settings = dict(agent_settings or {})
        self.agents: list[AgentProcess] = []

    def host_id(self, host: str) -> str:
        return self.host_prefix + host

    def add_agent(self, host: str, address: str, building: str = "default",
                  settings: Mapping[str, str] | None = None, bin_dir: Path = BIN
                  ) -> AgentProcess:
        """Start an agent for host ``host`` (id ``host_id(host)``) advertising ``address``,
        connected to every coordinator added so far, from ``bin_dir`` (another release's
        venv, say)."""
        host_id = self.host_id(host)
        tls = self.pki.agent_settings(host_id) if self.pki else {}
        agent = AgentProcess(self.workdir, host_id, address,
                             [c.address for c in self.coordinators], building, self.labels,
                             {**tls, **self.agent_settings, **(settings or {})}, bin_dir)
        self.agents.append(agent)
        return agent.start()

    def processes(self) -> list[ManagedProcess]:
        return [*self.coordinators, *self.agents]

    def close(self) -> None:
        """Agents (SIGTERM), their HAProxy and this cluster's containers, then the control
        plane and the work directory."""
        try:
            for agent in self.agents:
                agent.terminate()
            for agent in self.agents:
                with contextlib.suppress(Exception):
                    agent.shutdown_haproxy()
            remove_containers([f"{CLUSTER_LABEL}={self.name}"])
            for agent in self.agents:
                agent.remove_ifbs()
                agent.unmount()
        finally:
            super().close()


def stop_recorded_cluster(workdir: Path, labels: Sequence[str],
                          say: Callable[[str], None] = print) -> list[str]:
    """Stop what the pid files in ``workdir`` name (agents first), every agent's HAProxy
    there and the containers carrying ``labels``, then the rest (coordinators, etcd).
    What was stopped, one phrase each."""
    if not workdir.is_dir():
        return []
    recorded = recorded_processes(workdir)
    stopped: list[str] = []
    for name, (program, proc) in recorded.items():
        if program == AgentProcess.program:
            stop_recorded(workdir, name, proc)
            stopped.append(f"agent {name}")
    for data_dir in sorted(workdir.iterdir()):
        if (data_dir / "haproxy").is_dir() and stop_haproxy(data_dir):
            stopped.append(f"haproxy of {data_dir.name}")
        if data_dir.is_dir() and unmount_bpffs(data_dir):
            stopped.append(f"bpffs of {data_dir.name}")
    try:
        stopped += [f"container {c}" for c in remove_containers(labels)]
    except docker.errors.DockerException as exc:
        say(f"Docker is not reachable ({exc}); no containers removed")
    for name, (program, _) in recorded.items():
        if program == AgentProcess.program:
            stopped += [f"ifb {ifb}" for ifb in remove_host_ifbs(name)]
    for name, (program, proc) in recorded.items():
        if program != AgentProcess.program:
            stop_recorded(workdir, name, proc)
            stopped.append(name)
    return stopped
