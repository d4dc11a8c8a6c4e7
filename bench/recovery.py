"""Crash recovery time: the agent versus Docker's own ``--restart=on-failure``.

Kills the main process of a healthy demo instance N times (SIGKILL, on the host) and
measures death -> replacement answering its health check (GET /healthz polled every
10 ms from here, the same way for both), for the agent (a new container per crash, state
carried over) and for a plain container with ``--restart=on-failure`` on the same image,
limits and secure defaults. Also prints the agent's own death -> ``recovery.success``.
Figures only, no asserts. Needs root, Docker and the demo image.

    python bench/recovery.py [--kills 20] [--interval 11]

Kills alternate between the two (same load for both); each is killed every --interval
seconds, 11 by default, because Docker doubles its restart delay unless a container ran
for 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster

from local_cluster.processes import free_port

from agent.config import AgentConfig
from agent.instances.events import EventType
from agent.instances.resource_monitor import main_process_pid
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService

IMAGE = "landlord/demo-app:1.0.0"
ADDRESS = "127.0.0.2"
MIB = 1024 * 1024


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(ADDRESS, port, timeout=0.5)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def wait_healthy(port: int, timeout: float = 30.0) -> float:
    """Monotonic time the port first answered /healthz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(port):
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError(f"port {port} not healthy within {timeout} s")


def wait_replaced(port: int) -> float:
    """After a kill: the old process may answer for an instant; then wait for the new."""
    while healthy(port):
        time.sleep(0.005)
    return wait_healthy(port)


async def next_success(service: AgentService) -> float:
    async for event in service.bus.subscribe():
        if event.type == EventType.RECOVERY_SUCCESS:
            return event.time
    raise RuntimeError("event stream closed")


def summary(name: str, samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"{name:<38} n={len(ordered):>3}  p50 {p50 * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms"
          f"  max {ordered[-1] * 1000:7.0f} ms")
    return p50, p95


def start_docker_twin(client: docker.DockerClient, port: int) -> Any:
    """The same image, limits and defaults, with Docker's own restart policy."""
    return client.containers.run(
        IMAGE, detach=True, network_mode="host", init=True, read_only=True,
        tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        nano_cpus=1_000_000_000, mem_limit=128 * MIB, memswap_limit=128 * MIB,
        environment={"PORT": str(port), "BIND": ADDRESS},
        restart_policy={"Name": "on-failure"}, labels={"landlord.bench": "1"})


async def bench(kills: int, interval: float) -> tuple[list[float], list[float], list[float]]:
    """Rounds alternate one agent kill and one Docker kill, so both see the same load."""
    data = Path(tempfile.mkdtemp(prefix="landlord-bench-"))
    config = AgentConfig(host_id=f"bench{os.getpid()}", advertise_address=ADDRESS,
                         data_dir=data, run_dir=data / "run", labels=("landlord.bench=1",),
                         bandwidth=False, crash_delay=0.0, loop_backoff=0.0,
                         healthy_reset=1.0, max_incidents=10_000,
                         startup_probe_interval=0.02)
    service = AgentService(config, DockerRuntime())
    await service.open()
    client = docker.from_env()
    port, twin_port = free_port(ADDRESS), free_port(ADDRESS)
    spec = InstanceSpec(apartment="bench", unit="demo", version="1.0.0", slot=Slot.BLUE,
                        instance_id="bench-1", image=IMAGE, port=port,
                        health=HealthSpec(interval_s=1.0, timeout_s=0.5),
                        resources=ResourceSpec(cpu=1.0, memory=128 * MIB))
    external: list[float] = []
    internal: list[float] = []
    theirs: list[float] = []
    twin = await asyncio.to_thread(start_docker_twin, client, twin_port)
    try:
        await service.start_instance(spec)
        await asyncio.to_thread(wait_healthy, twin_port)
        for _ in range(kills):
            await asyncio.sleep(interval / 2)
            view = service.instance("bench-1")
            info = await service.runtime.inspect(view.container_id or "")
            success = asyncio.create_task(next_success(service))
            await asyncio.sleep(0)  # subscribed before the kill
            killed_wall, killed = time.time(), time.monotonic()
            os.kill(main_process_pid(info.pid), signal.SIGKILL)
            back = await asyncio.to_thread(wait_replaced, port)
            external.append(back - killed)
            internal.append((await success) - killed_wall)

            await asyncio.sleep(interval / 2)
            await asyncio.to_thread(twin.reload)
            killed = time.monotonic()
            os.kill(main_process_pid(twin.attrs["State"]["Pid"]), signal.SIGKILL)
            theirs.append(await asyncio.to_thread(wait_replaced, twin_port) - killed)
    finally:
        await asyncio.to_thread(twin.remove, force=True)
        client.close()
        await service.stop_instance("bench-1", grace=2)
        await service.close()
    return external, internal, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--interval", type=float, default=11.0)
    args = parser.parse_args()
    print(f"{args.kills} kills each, {args.interval:g} s apart, image {IMAGE}, 1 core, 128 MiB")
    external, internal, docker_samples = asyncio.run(bench(args.kills, args.interval))
    _, ours = summary("agent: death -> /healthz answers", external)
    summary("agent: death -> recovery.success", internal)
    _, theirs = summary("docker --restart=on-failure", docker_samples)
    print(f"p95 ratio agent / docker: {ours / theirs:.2f} (target <= 1.5, and p95 < 2 s)")


if __name__ == "__main__":
    main()
