"""Start and stop the demo cluster: one coordinator and three agents as detached processes.

Everything lives under RUN_DIR (default <repo>/.run/demo): ``<name>.log``, ``<name>.pid``,
``coordinator.toml``, ``coordinator.address`` and each agent's data directory ``h1``...
Containers the agents start carry the label ``landlord.demo=1`` (agent ``labels`` setting).
Stopping trusts a pid file only when that process's command line is the expected program.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import docker
import psutil

from agent.dataplane import HaproxyPaths
from agent.dataplane.haproxy_process import HaproxyProcess

__all__ = ["DEMO_LABEL", "ETCD", "HOSTS", "PREFIX", "RUN_DIR", "DemoCluster", "DemoError",
           "free_port_on_all", "stop_demo", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("LANDLORD_DEMO_DIR",
                              Path(os.environ.get("LANDLORD_RUN_DIR", ROOT / ".run")) / "demo"))
BIN = Path(sys.executable).parent
ETCD = "127.0.0.1:2379"
PREFIX = "/landlord-demo"
DEMO_LABEL = "landlord.demo=1"
# Host ids unique to the demo: an agent adopts every container labelled with its host id,
# so a test cluster's "h1" on the same Docker must not be the demo's host.
HOSTS = {"demo-h1": "127.0.0.2", "demo-h2": "127.0.0.3", "demo-h3": "127.0.0.4"}
BUILDING = "demo"
PREFERRED_COORDINATOR_PORT = 7070  # the CLI's default address
AGENT_SETTINGS = {
    "stop_grace": "3",
    "crash_delay": "0.5",
    "startup_probe_interval": "0.1",
    "monitor_interval": "2",
    "bandwidth": "false",
    "log_format": "text",
}
COORDINATOR_SETTINGS: dict[str, object] = {
    "id": "demo-coordinator",
    "etcd_prefix": PREFIX,
    "leader_lease_ttl": 3,
    "heartbeat_interval": 2.0,
    "liveness_grace": 10.0,
    "report_interval": 0.2,
    "shutdown_grace": 2.0,
    "stop_grace": 3.0,
    "log_format": "text",
    # instance host ports away from the default 20000-29999, which test clusters on the
    # same loopback addresses use
    "port_range_start": 31000,
    "port_range_end": 31999,
}


class DemoError(Exception):
    """Something in the demo did not behave; the message says what."""


def port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port_on_all(addresses: Sequence[str], preferred: int = 0) -> int:
    if preferred and all(port_free(a, preferred) for a in addresses):
        return preferred
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
        if all(port_free(a, port) for a in addresses):
            return port
    raise DemoError(f"no TCP port free on all of {list(addresses)}")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def wipe_etcd_prefix(prefix: str = PREFIX, endpoint: str = ETCD) -> None:
    """Delete every key under ``prefix`` through etcd's JSON gateway."""
    key = prefix.encode()
    end = key[:-1] + bytes([key[-1] + 1])
    body = {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode()}
    request = urllib.request.Request(f"http://{endpoint}/v3/kv/deleterange",
                                     data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            reply.read()
    except OSError as exc:
        raise DemoError(f"etcd at {endpoint} is not reachable ({exc}); run `make setup`") from None


def _spawn(name: str, args: list[str], env: dict[str, str]) -> int:
    with (RUN_DIR / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **env},
                                start_new_session=True)
    (RUN_DIR / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


@dataclass
class DemoCluster:
    coordinator: str = ""
    """host:port of the coordinator once started."""

    def start(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        wipe_etcd_prefix()
        for name in ["coordinator", *HOSTS]:
            (RUN_DIR / f"{name}.log").unlink(missing_ok=True)
        for host_id in HOSTS:
            shutil.rmtree(RUN_DIR / host_id, ignore_errors=True)
        port = free_port_on_all(["127.0.0.1"], PREFERRED_COORDINATOR_PORT)
        self.coordinator = f"127.0.0.1:{port}"
        config = RUN_DIR / "coordinator.toml"
        values = {**COORDINATOR_SETTINGS, "listen": self.coordinator, "etcd_endpoints": [ETCD]}
        config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))
        (RUN_DIR / "coordinator.address").write_text(self.coordinator + "\n")
        _spawn("coordinator", [str(BIN / "landlord-coordinator"), "--config", str(config)], {})
        for host_id in HOSTS:
            self._start_agent(host_id)

    def _start_agent(self, host_id: str) -> None:
        data = RUN_DIR / host_id
        values = {
            "host_id": host_id, "advertise_address": HOSTS[host_id], "building": BUILDING,
            "coordinators": self.coordinator, "data_dir": str(data),
            "run_dir": str(data / "run"), "labels": DEMO_LABEL, **AGENT_SETTINGS,
        }
        env = {f"LANDLORD_AGENT_{k.upper()}": v for k, v in values.items()}
        _spawn(host_id, [str(BIN / "landlord-agent")], env)

    def alive(self) -> list[str]:
        """Names of demo processes that died (empty when all run)."""
        return [name for name in ["coordinator", *HOSTS] if _demo_process(name) is None]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = RUN_DIR / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _demo_process(name: str) -> psutil.Process | None:
    """The live process of pid file ``name``, if its command line is the demo's program."""
    try:
        pid = int((RUN_DIR / f"{name}.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        program = "landlord-coordinator" if name == "coordinator" else "landlord-agent"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if any(program in part for part in proc.cmdline()):
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def _terminate(name: str, timeout: float = 30.0) -> bool:
    proc = _demo_process(name)
    (RUN_DIR / f"{name}.pid").unlink(missing_ok=True)
    if proc is None:
        return False
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return True


def stop_demo(say: Callable[[str], None] = print) -> list[str]:
    """Stop agents, their HAProxy, the containers, then the coordinator; what was stopped."""
    stopped: list[str] = []
    for host_id in HOSTS:
        if _terminate(host_id):
            stopped.append(f"agent {host_id}")
    for host_id in HOSTS:
        haproxy = HaproxyProcess(HaproxyPaths(RUN_DIR / host_id / "haproxy"))
        if haproxy.processes():
            asyncio.run(haproxy.stop())
            stopped.append(f"haproxy of {host_id}")
    try:
        client = docker.from_env(timeout=60)
    except docker.errors.DockerException as exc:
        say(f"demo: Docker is not reachable ({exc}); no containers removed")
    else:
        try:
            for container in client.containers.list(all=True, filters={"label": DEMO_LABEL}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                stopped.append(f"container {container.name}")
        finally:
            client.close()
    if _terminate("coordinator"):
        stopped.append("coordinator")
    return stopped


T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something true; DemoError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not yet; the last one is reported
            last = exc
        time.sleep(interval)
    raise DemoError(f"{what} did not happen within {timeout:.0f}s"
                    + (f" (last error: {last})" if last else ""))
