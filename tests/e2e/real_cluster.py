"""A real Landlord cluster as processes: etcd, `landlord-coordinator`, `landlord-agent`s.

Everything is started the way a user would: the console scripts installed next to this
Python (.venv/bin), configured by a TOML file (coordinator) or LANDLORD_AGENT_* variables
(agents). Agents run real containers on Docker (labelled ``landlord.test=1`` through the
agent's ``labels`` setting, so the session cleanup catches leftovers) and their own HAProxy.

``RealCluster.close()`` stops what it started, in order: agents (SIGTERM; containers and
HAProxy outlive them by design), then every agent's HAProxy and containers, then the
coordinator and etcd, then the temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import grpc

from agent.dataplane import HaproxyPaths
from agent.dataplane.haproxy_process import HaproxyProcess
from common.gen.landlord.v1 import admin_pb2_grpc
from tests.e2e.cluster import CoordinatorProcess, EtcdProcess, _Process, wait_until

__all__ = ["AgentProcess", "ConsoleCoordinator", "RealCluster", "free_port_on_all"]

BIN = Path(sys.executable).parent
TEST_LABEL = "landlord.test=1"
AGENT_SETTINGS = {
    # short timings for a test; every one is an ordinary agent setting
    "stop_grace": "3",
    "crash_delay": "0.5",
    "startup_probe_interval": "0.1",
    "monitor_interval": "2",
    "bandwidth": "false",
    "log_format": "text",
}


def free_port_on_all(addresses: Sequence[str]) -> int:
    """A TCP port free on every one of ``addresses`` (a unit's entry point on each host)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


class ConsoleCoordinator(CoordinatorProcess):
    """The installed ``landlord-coordinator`` with a private config file."""

    def start(self, timeout: float = 30.0) -> ConsoleCoordinator:
        self._spawn([str(BIN / "landlord-coordinator"), "--config", str(self.config_path)])
        wait_until(self.serving, timeout, f"coordinator {self.name} serving")
        return self


class AgentProcess(_Process):
    """The installed ``landlord-agent`` for one simulated host (its own loopback address,
    data directory and HAProxy)."""

    def __init__(self, workdir: Path, host_id: str, address: str, coordinators: Sequence[str],
                 building: str, settings: dict[str, str] | None = None) -> None:
        super().__init__(host_id, workdir)
        self.host_id = host_id
        self.address = address
        self.data_dir = workdir / host_id
        values = {
            "host_id": host_id,
            "advertise_address": address,
            "building": building,
            "coordinators": ",".join(coordinators),
            "data_dir": str(self.data_dir),
            "run_dir": str(self.data_dir / "run"),
            "labels": TEST_LABEL,
            **AGENT_SETTINGS,
            **(settings or {}),
        }
        self.env = {f"LANDLORD_AGENT_{k.upper()}": v for k, v in values.items()}
        self.returncode: int | None = None

    def start(self) -> AgentProcess:
        self._spawn([str(BIN / "landlord-agent")], self.env)
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.returncode = self.proc.wait(5)
            self.proc = None
        return -1 if self.returncode is None else self.returncode

    @property
    def haproxy(self) -> HaproxyProcess:
        return HaproxyProcess(HaproxyPaths(self.data_dir / "haproxy"))

    def shutdown_haproxy(self) -> None:
        asyncio.run(self.haproxy.stop())

    def remove_containers(self) -> int:
        client = docker.from_env(timeout=60)
        try:
            found = client.containers.list(
                all=True, filters={"label": [TEST_LABEL, f"landlord.host={self.host_id}"]})
            for container in found:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
            return len(found)
        finally:
            client.close()


class RealCluster:
    """etcd + console-script coordinators + real agents in one temporary directory.

    ``coordinators`` > 1 starts that many coordinators on the same etcd prefix (one leads,
    the others follow); every agent is given all their addresses. ``self.coordinator`` is
    the first one started; ``leader()`` asks which one leads now.
    """

    PREFIX = "/landlord-real"

    def __init__(self, coordinator_settings: dict[str, Any] | None = None,
                 coordinators: int = 1) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="landlord-real-")
        self.workdir = Path(self._tmp.name)
        self.etcd = EtcdProcess(self.workdir)
        self.coordinators = [
            ConsoleCoordinator(self.workdir, f"coord{i + 1}", self.etcd.endpoint, self.PREFIX,
                               coordinator_settings)
            for i in range(coordinators)
        ]
        self.coordinator = self.coordinators[0]
        self.agents: list[AgentProcess] = []

    def start(self) -> RealCluster:
        self.etcd.start()
        self.coordinator.start()
        wait_until(lambda: self.coordinator.leader_info().this_is_leader, 30,
                   "first coordinator leads")
        for other in self.coordinators[1:]:
            other.start()
        return self

    def leader(self, timeout: float = 30.0) -> ConsoleCoordinator:
        """The running coordinator that says it leads (waits up to ``timeout``)."""
        def find() -> ConsoleCoordinator | None:
            for c in self.coordinators:
                if c.running and c.leader_info().this_is_leader:
                    return c
            return None
        found: ConsoleCoordinator = wait_until(find, timeout, "a coordinator leading")
        return found

    def add_agent(self, host_id: str, address: str, building: str,
                  settings: dict[str, str] | None = None) -> AgentProcess:
        agent = AgentProcess(self.workdir, host_id, address,
                             [c.address for c in self.coordinators], building, settings)
        self.agents.append(agent)
        return agent.start()

    @contextlib.contextmanager
    def admin(self, coordinator: ConsoleCoordinator | None = None) -> Iterator[Any]:
        """An Admin stub on ``coordinator`` (default: the first one)."""
        target = coordinator or self.coordinator
        with grpc.insecure_channel(target.address) as channel:
            yield admin_pb2_grpc.AdminStub(channel)

    def close(self) -> None:
        try:
            for agent in self.agents:
                agent.terminate()
            for agent in self.agents:
                with contextlib.suppress(Exception):
                    agent.shutdown_haproxy()
                agent.remove_containers()
        finally:
            for coordinator in self.coordinators:
                coordinator.stop(10)
            self.etcd.stop(10)
            self._tmp.cleanup()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(lines)}"
                         for p in [*self.coordinators, *self.agents])
