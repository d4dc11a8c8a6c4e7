"""Start a real Landlord control plane as processes, for end-to-end tests and benchmarks.

- ``EtcdProcess``: a private etcd (/usr/bin/etcd) on free 127.0.0.1 ports with a temporary
  data directory; it can be stopped and started again on the same ports and data.
- ``CoordinatorProcess``: ``python -m coordinator.main`` with a config pointing at that etcd.
- ``SimulatedAgentProcess``: tests/e2e/simulated_agent.py, a SIMULATED agent (real gRPC
  stream through agent/stream/session.py, fake in-memory container runtime) that writes its
  instances and data-plane routes to a JSON state file the test reads.
- ``Cluster``: all of the above with one cleanup; ``admin()`` gives an Admin stub.

Every process is started by the test and stopped by pid in ``close()``; nothing is left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc

__all__ = [
    "Cluster",
    "CoordinatorProcess",
    "EtcdProcess",
    "SimulatedAgentProcess",
    "free_port",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ETCD = "/usr/bin/etcd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout}s (last error: {last!r})")


class _Process:
    """A child process with its output in a log file, stopped by pid."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class EtcdProcess(_Process):
    """A private single-node etcd on loopback."""

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
        self._spawn(
            [
                ETCD,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"{self.name}={peer}",
                "--log-level",
                "warn",
            ]
        )
        wait_until(self.healthy, timeout, f"etcd on {self.endpoint}")
        return self

    def healthy(self) -> bool:
        if not self.running:
            raise RuntimeError(f"etcd exited:\n{self.log_tail()}")
        with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")

    def count_revision(self) -> int:
        """The store revision (every write bumps it), through etcd's JSON gateway."""
        request = urllib.request.Request(
            f"http://{self.endpoint}/v3/kv/range",
            data=json.dumps({"key": "AA==", "count_only": True}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as reply:
            return int(json.loads(reply.read())["header"]["revision"])

    def _range(self, prefix: str) -> list[dict[str, Any]]:
        start = base64.b64encode(prefix.encode()).decode()
        end_bytes = bytearray(prefix.encode())
        end_bytes[-1] += 1
        request = urllib.request.Request(
            f"http://{self.endpoint}/v3/kv/range",
            data=json.dumps(
                {"key": start, "range_end": base64.b64encode(bytes(end_bytes)).decode()}
            ).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as reply:
            return list(json.loads(reply.read()).get("kvs", []))

    def dump(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value (for "nothing changed" checks)."""
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in self._range(prefix)
        }

    def revisions(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its mod revision (a write changes one)."""
        return {
            base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"])
            for kv in self._range(prefix)
        }


class CoordinatorProcess(_Process):
    """``python -m coordinator.main`` with a private config file."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        etcd_endpoint: str,
        prefix: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, workdir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config_path = workdir / f"{name}.toml"
        values: dict[str, Any] = {
            "id": name,
            "listen": self.address,
            "etcd_endpoints": [etcd_endpoint],
            "etcd_prefix": prefix,
            "leader_lease_ttl": 3,
            "heartbeat_interval": 1.0,
            "liveness_grace": 3.0,
            "report_interval": 0.2,
            "shutdown_grace": 2.0,
            "log_level": "INFO",
        }
        values.update(settings or {})
        self.config_path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))

    def start(self, timeout: float = 20.0) -> CoordinatorProcess:
        self._spawn([PYTHON, "-m", "coordinator.main", "--config", str(self.config_path)])
        wait_until(self.serving, timeout, f"coordinator {self.name} serving")
        return self

    def serving(self) -> bool:
        if not self.running:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        with grpc.insecure_channel(self.address) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            stub.GetLeader(admin_pb2.GetLeaderRequest(), timeout=1)
        return True

    def leader_info(self) -> admin_pb2.GetLeaderResponse:
        with grpc.insecure_channel(self.address) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            reply: admin_pb2.GetLeaderResponse = stub.GetLeader(
                admin_pb2.GetLeaderRequest(), timeout=2
            )
            return reply


class SimulatedAgentProcess(_Process):
    """A SIMULATED agent: real stream client, fake runtime, state in a JSON file."""

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
    ) -> None:
        super().__init__(host_id, workdir)
        self.host_id = host_id
        self.address = address
        self.state_path = workdir / f"{host_id}.state.json"
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

    def start(self) -> SimulatedAgentProcess:
        self._spawn(self.args)
        return self

    def state(self) -> dict[str, Any]:
        """What the fake runtime holds: instances, routes, connected, commands seen."""
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def instances(self) -> dict[str, Any]:
        return dict(self.state().get("instances", {}))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


class Cluster:
    """etcd + coordinators + simulated agents in one temporary directory."""

    def __init__(self, workdir: Path | None = None, prefix: str = "/landlord-e2e") -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="landlord-e2e-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.prefix = prefix
        self.etcd = EtcdProcess(self.workdir)
        self.coordinators: list[CoordinatorProcess] = []
        self.agents: list[SimulatedAgentProcess] = []

    def start_etcd(self) -> EtcdProcess:
        return self.etcd.start()

    def add_coordinator(self, settings: dict[str, Any] | None = None) -> CoordinatorProcess:
        name = f"coord{len(self.coordinators) + 1}"
        coord = CoordinatorProcess(self.workdir, name, self.etcd.endpoint, self.prefix, settings)
        self.coordinators.append(coord)
        return coord.start()

    def add_agent(self, host_id: str, address: str, **kwargs: Any) -> SimulatedAgentProcess:
        addresses = [c.address for c in self.coordinators]
        agent = SimulatedAgentProcess(self.workdir, host_id, address, addresses, **kwargs)
        self.agents.append(agent)
        return agent.start()

    def leader(self, timeout: float = 15.0) -> CoordinatorProcess:
        def find() -> CoordinatorProcess | None:
            for coord in self.coordinators:
                if coord.running and coord.leader_info().this_is_leader:
                    return coord
            return None

        found: CoordinatorProcess = wait_until(find, timeout, "a leader")
        return found

    @contextlib.contextmanager
    def admin(self, coordinator: CoordinatorProcess | None = None) -> Iterator[Any]:
        target = coordinator or self.leader()
        with grpc.insecure_channel(target.address) as channel:
            yield admin_pb2_grpc.AdminStub(channel)

    def close(self) -> None:
        for agent in self.agents:
            agent.stop(5)
        for coord in self.coordinators:
            coord.stop(10)
        self.etcd.stop(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def logs(self) -> str:
        parts = [f"--- {p.name}\n{p.log_tail(60)}" for p in [*self.coordinators, *self.agents]]
        return "\n".join(parts)


def terminate(process: _Process) -> None:
    """SIGTERM without waiting (the test observes what happens next)."""
    process.signal(signal.SIGTERM)
