"""A SIMULATED cluster for end-to-end tests of the coordinator: the launcher's control plane
(scripts/local_cluster: a private etcd and ``landlord-coordinator`` processes) with
SIMULATED agents.

- ``SimulatedAgentProcess``: tests/e2e/simulated_agent.py (real gRPC stream through
  agent/stream/session.py, fake in-memory container runtime) that writes its instances and
  data-plane routes to a JSON state file the test reads;
- ``Cluster``: all of the above with one cleanup; ``admin()`` gives an Admin stub. Like the
  launcher's, it runs mutual TLS unless ``tls=False``: each simulated agent shows its host
  certificate.

Every process is started by the test and stopped by pid in ``close()``; nothing is left.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local_cluster.cluster import ControlPlane
from local_cluster.processes import ROOT, ManagedProcess

from common.transport import TlsSettings

__all__ = ["Cluster", "SimulatedAgentProcess"]

PYTHON = sys.executable


class SimulatedAgentProcess(ManagedProcess):
    """A SIMULATED agent: real stream client, fake runtime, state in a JSON file."""

    program = "simulated_agent.py"

    def __init__(
        self,
        workdir: Path,
        host_id: str,
        address: str,
        coordinators: Sequence[str],
        building: str = "default",
        cpu_millis: int = 4000,
        memory_bytes: int = 8 << 30,
        images: Sequence[str] = ("demo:1",),
        tls: TlsSettings | None = None,
        name: str = "",
    ) -> None:
        super().__init__(name or host_id, workdir)
        self.host_id = host_id
        self.address = address
        self.state_path = workdir / f"{name or host_id}.state.json"
        self.args = [
            PYTHON,
            str(ROOT / "tests" / "e2e" / "simulated_agent.py"),
            "--host-id",
            host_id,
            "--address",
            address,
            "--building",
            building,
            "--coordinators",
            ",".join(coordinators),
            "--state-file",
            str(self.state_path),
            "--cpu-millis",
            str(cpu_millis),
            "--memory-bytes",
            str(memory_bytes),
            "--images",
            ",".join(images),
        ]
        if tls is not None:
            self.args += ["--tls-ca", tls.ca_file, "--tls-cert", tls.cert_file,
                          "--tls-key", tls.key_file]

    def start(self) -> SimulatedAgentProcess:
        self.spawn(self.args)
        return self

    def state(self) -> dict[str, Any]:
        """What the fake runtime holds: instances, routes, connected, commands seen."""
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def instances(self) -> dict[str, Any]:
        return dict(self.state().get("instances", {}))


class Cluster(ControlPlane):
    """etcd + coordinators + simulated agents in one temporary directory (``start_etcd()``,
    then ``add_coordinator()`` and ``add_agent()`` as the test needs them)."""

    def __init__(self, workdir: Path | None = None, prefix: str = "/landlord-e2e",
                 tls: bool = True) -> None:
        super().__init__("e2e", workdir=workdir, prefix=prefix, tls=tls)
        self.agents: list[SimulatedAgentProcess] = []

    def add_agent(self, host_id: str, address: str, **kwargs: Any) -> SimulatedAgentProcess:
        addresses = [c.address for c in self.coordinators]
        tls = self.pki.agent(host_id) if self.pki else None
        agent = SimulatedAgentProcess(self.workdir, host_id, address, addresses, tls=tls,
                                      **kwargs)
        self.agents.append(agent)
        return agent.start()

    def processes(self) -> list[ManagedProcess]:
        return [*self.coordinators, *self.agents]

    def close(self) -> None:
        for agent in self.agents:
            agent.stop(5)
        super().close()
