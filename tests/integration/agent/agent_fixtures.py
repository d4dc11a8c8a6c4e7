"""Helpers for agent tests on real Docker: agents with short timings, free ports on the
simulated host address, event waiting, cleanup of every container an agent made."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from agent.config import AgentConfig
from agent.instances.events import AgentEvent
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec
from agent.limits.veth_shaping import ifb_owner, remove_owned_ifbs
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService
from tests.e2e.real_cluster import OWNER
from tests.support import async_eventually

REPO = Path(__file__).resolve().parents[3]
DEMO_VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
DEMO_IMAGE = "landlord/demo-app:1.0.0"
HOST_ADDRESS = "127.0.0.2"
TEST_LABEL = "landlord.test=1"

# timings short enough for tests; every one is a config setting
FAST = {
    "stop_grace": 2.0,
    "crash_delay": 0.2,
    "leak_delay": 0.0,
    "loop_backoff": 0.2,
    "loop_backoff_cap": 1.0,
    "monitor_interval": 1.0,
    "storage_interval": 1.0,
    "gc_idle_interval": 3600.0,
    "gc_memory_interval": 3600.0,
    "gc_cache_interval": 3600.0,
    "leak_window": 3600.0,
    "startup_probe_interval": 0.05,
}


def free_port(address: str = HOST_ADDRESS) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def make_spec(instance_id: str, port: int | None = None, **overrides: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "apartment": "test",
        "unit": "demo",
        "version": "1.0.0",
        "slot": "blue",
        "instance_id": instance_id,
        "image": DEMO_IMAGE,
        "port": port or free_port(),
        "health": HealthSpec(interval_s=0.5, timeout_s=1.0, retries=2),
        "resources": ResourceSpec(cpu=1.0, memory=128 * 1024 * 1024),
    }
    values.update(overrides)
    return InstanceSpec(**values)


def ensure_demo_images() -> None:
    """Build the demo images once from local Debian packages (the script caches)."""
    client = docker.from_env()
    try:
        missing = [v for v in DEMO_VERSIONS if not client.images.list(f"landlord/demo-app:{v}")]
    finally:
        client.close()
    if missing:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "build-demo-image.sh")], check=True, timeout=1800
        )


def sh(*cmd: str) -> str:
    """Run a command, return its output (failures are the caller's to judge)."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def remove_host_containers(host_id: str) -> None:
    client = docker.from_env()
    try:
        # The low-level list does not inspect each container, so a container the agent
        # removes meanwhile (e.g. a crashed one after its replacement) cannot fail it.
        for found in client.api.containers(
            all=True, filters={"label": [f"landlord.host={host_id}"]}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(found["Id"], force=True)
    finally:
        client.close()


class AgentHarness:
    """Makes agents for one test; removes their containers afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services: list[AgentService] = []
        self.hosts: set[str] = set()
        self.stops: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    def config(self, host_id: str | None = None, **overrides: Any) -> AgentConfig:
        host_id = host_id or f"t{uuid.uuid4().hex[:8]}"
        self.hosts.add(host_id)
        values: dict[str, Any] = dict(FAST)
        values.update(
            host_id=host_id,
            advertise_address=HOST_ADDRESS,
            data_dir=self.root / host_id,
            run_dir=self.root / host_id / "run",
            # the owner's pid too: another pytest session's clean-up (tests/conftest.py)
            # removes test containers without a live owner, even mid-test
            labels=(TEST_LABEL, OWNER),
            bandwidth=False,
        )
        values.update(overrides)
        return AgentConfig(**values)

    async def agent(self, run_loops: bool = False, **overrides: Any) -> AgentService:
        service = AgentService(self.config(**overrides), DockerRuntime())
        await service.open()
        self.services.append(service)
        if run_loops:
            stop = asyncio.Event()
            self.stops.append(stop)
            self.tasks.append(asyncio.create_task(service.run(stop)))
        return service

    async def close(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for service in self.services:
            await service.close()
        for host in self.hosts:
            await asyncio.to_thread(remove_host_containers, host)
            # the ifbs of limited instances a failed test left unreleased
            await asyncio.to_thread(remove_owned_ifbs, ifb_owner(host, ""))


async def wait_event(
    service: AgentService,
    event_type: str,
    match: Callable[[AgentEvent], bool] = lambda e: True,
    timeout: float = 30.0,
) -> AgentEvent:
    async def found() -> AgentEvent | None:
        return next((e for e in service.bus.recent(event_type) if match(e)), None)

    event = await async_eventually(
        found, timeout=timeout, interval=0.1, message=f"event {event_type}"
    )
    assert event is not None
    return event


def http_get(port: int, path: str = "/", address: str = HOST_ADDRESS) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
