"""Crash recovery time: the agent versus Docker's own ``--restart=on-failure``.

Kills the main process of a healthy demo instance N times (SIGKILL, on the host) and
measures death -> replacement answering its health check (GET /healthz polled every
10 ms from here, the same way for both), for the agent (a new container per crash, state
carried over) and for a plain container with ``--restart=on-failure`` on the same image,
limits and secure defaults. Also prints the agent's own death -> ``recovery.success``
and where that time goes (die event seen, crash handled, replacement start called, started,
first healthy check, in the route, and when the crash dump was written: off the critical
path). Figures only, no asserts. Needs root, Docker and the demo image.

    python bench/recovery.py [--kills 20] [--interval 11] [--burn 2]

With ``--burn N`` the same rounds run twice: quiet first, then next to N busy processes
(started and stopped here) competing for the CPU with the agent and dockerd.

Kills alternate between the two (same load for both); each is killed every --interval
seconds, 11 by default, because Docker doubles its restart delay unless a container ran
for 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster

from local_cluster.processes import free_port

from agent.config import AgentConfig
from agent.instances.events import EventType
from agent.instances.resource_monitor import main_process_pid
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot, StateMode
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService

IMAGE = "landlord/demo-app:1.0.0"
ADDRESS = "127.0.0.2"
MIB = 1024 * 1024
QUIET_TARGET = 0.8
LOADED_TARGET = 1.0


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


def summary(name: str, samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"{name:<40} n={len(ordered):>3}  p50 {p50 * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms"
          f"  max {ordered[-1] * 1000:7.0f} ms")
    return p50, p95


PHASES = (  # (label, from mark, to mark); marks are wall-clock times of one agent kill
    ("kill -> die event seen", "killed", "seen"),
    ("die seen -> crash handled", "seen", EventType.CRASHED),
    ("crash handled -> start called", EventType.CRASHED, "starting"),
    ("start called -> started", "starting", "started"),
    ("started -> first healthy check", "started", EventType.HEALTH),
    ("healthy -> in the route (switch)", EventType.HEALTH, EventType.TRAFFIC_SWITCH),
    ("kill -> crash dump written (off path)", "killed", EventType.CRASH_DUMP),
)


class Marks:
    """When each step of the agent's recoveries happened: the agent's own events, plus
    the die event reaching it and its container start call (timed wrappers)."""

    def __init__(self, service: AgentService) -> None:
        self.rounds: list[dict[str, float]] = []
        self.success: asyncio.Queue[float] = asyncio.Queue()
        sup, runtime = service.supervisor, service.runtime
        handle, start = sup.handle_event, runtime.start

        async def seen(event: Any) -> None:
            if event.action == "die":
                self.mark("seen", time.time())
            await handle(event)

        async def started(container_id: str) -> None:
            self.mark("starting", time.time())
            await start(container_id)
            self.mark("started", time.time())

        sup.handle_event = seen  # type: ignore[method-assign]
        runtime.start = started  # type: ignore[method-assign]
        self.task = asyncio.create_task(self._follow(service))

    def mark(self, name: str, at: float) -> None:
        if self.rounds and name not in self.rounds[-1]:
            self.rounds[-1][name] = at

    async def _follow(self, service: AgentService) -> None:
        async for event in service.bus.subscribe():
            if event.type == EventType.HEALTH and not event.details.get("healthy"):
                continue
            self.mark(event.type, event.time)
            if event.type == EventType.RECOVERY_SUCCESS:
                self.success.put_nowait(event.time)

    def phases(self) -> list[tuple[str, list[float]]]:
        return [(label, [r[b] - r[a] for r in self.rounds if a in r and b in r])
                for label, a, b in PHASES]


def start_docker_twin(client: docker.DockerClient, port: int, network: str) -> Any:
    """The same image, limits, defaults and network as the agent's instance (bridged, its
    port published on the host address through Docker's proxy), with Docker's own restart
    policy."""
    return client.containers.run(
        IMAGE, detach=True, network=network, ports={f"{port}/tcp": (ADDRESS, port)},
        init=True, read_only=True,
        tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        nano_cpus=1_000_000_000, mem_limit=128 * MIB, memswap_limit=128 * MIB,
        environment={"PORT": str(port), "BIND": "0.0.0.0"},
        restart_policy={"Name": "on-failure"}, labels={"landlord.bench": "1"})


@dataclass
class Run:
    """One pass of rounds: death -> /healthz for the agent and for Docker, and the
    agent's own marks."""

    external: list[float] = field(default_factory=list)
    internal: list[float] = field(default_factory=list)
    docker: list[float] = field(default_factory=list)
    phases: list[tuple[str, list[float]]] = field(default_factory=list)


async def bench(kills: int, interval: float, spares: bool) -> Run:
    """Rounds alternate one agent kill and one Docker kill, so both see the same load."""
    data = Path(tempfile.mkdtemp(prefix="landlord-bench-"))
    config = AgentConfig(host_id=f"bench{os.getpid()}", advertise_address=ADDRESS,
                         data_dir=data, run_dir=data / "run", labels=("landlord.bench=1",),
                         bandwidth=False, crash_delay=0.0, loop_backoff=0.0,
                         healthy_reset=1.0, max_incidents=10_000,
                         startup_probe_interval=0.02, spare_containers=spares)
    service = AgentService(config, DockerRuntime())
    await service.open()
    marks = Marks(service)
    client = docker.from_env()
    port, twin_port = free_port(ADDRESS), free_port(ADDRESS)
    spec = InstanceSpec(apartment="bench", unit="demo", version="1.0.0", slot=Slot.BLUE,
                        instance_id="bench-1", image=IMAGE, port=port,
                        health=HealthSpec(interval_s=1.0, timeout_s=0.5),
                        resources=ResourceSpec(cpu=1.0, memory=128 * MIB),
                        state_mode=StateMode.SNAPSHOT)
    run = Run()
    twin = await asyncio.to_thread(start_docker_twin, client, twin_port,
                                   config.bridge_network)
    try:
        await service.start_instance(spec)
        await asyncio.to_thread(wait_healthy, twin_port)
        for _ in range(kills):
            await asyncio.sleep(interval / 2)
            view = service.instance("bench-1")
            info = await service.runtime.inspect(view.container_id or "")
            killed_wall, killed = time.time(), time.monotonic()
            marks.rounds.append({"killed": killed_wall})
            os.kill(main_process_pid(info.pid), signal.SIGKILL)
            back = await asyncio.to_thread(wait_replaced, port)
            run.external.append(back - killed)
            run.internal.append((await marks.success.get()) - killed_wall)

            await asyncio.sleep(interval / 2)
            await asyncio.to_thread(twin.reload)
            killed = time.monotonic()
            os.kill(main_process_pid(twin.attrs["State"]["Pid"]), signal.SIGKILL)
            run.docker.append(await asyncio.to_thread(wait_replaced, twin_port) - killed)
    finally:
        await asyncio.to_thread(twin.remove, force=True)
        client.close()
        await service.stop_instance("bench-1", grace=2)
        marks.task.cancel()
        await service.close()
        shutil.rmtree(data, ignore_errors=True)
    run.phases = marks.phases()
    return run


def report(title: str, run: Run, target: float) -> None:
    print(f"-- {title}")
    median, ours = summary("agent: death -> /healthz answers", run.external)
    summary("agent: death -> recovery.success", run.internal)
    their_median, theirs = summary("docker --restart=on-failure", run.docker)
    print(f"p95 ratio agent / docker: {ours / theirs:.2f} (target <= {target:g});"
          f" p50 ratio {median / their_median:.2f}")
    print("agent's recovery, phase by phase (from its own events):")
    for label, samples in run.phases:
        if samples:
            summary(f"  {label}", samples)


@contextlib.contextmanager
def burners(count: int) -> Iterator[None]:
    """``count`` busy Python processes for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
            " (other work on this machine, e.g. test suites, counts too)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--interval", type=float, default=11.0)
    parser.add_argument("--burn", type=int, default=2,
                        help="busy processes for the second pass (0: quiet pass only)")
    parser.add_argument("--spares", action="store_true",
                        help="the agent keeps a created replacement container per instance "
                             "(agent setting spare_containers, off by default)")
    args = parser.parse_args()
    print(f"{args.kills} kills each, {args.interval:g} s apart, image {IMAGE}, 1 core, 128 MiB,"
          " state snapshot directory kept, both containers bridged (the default network)"
          f"{', spare containers on' if args.spares else ''}")
    print(f"quiet pass: before it, {load()}")
    quiet = asyncio.run(bench(args.kills, args.interval, args.spares))
    report("quiet: no burner of ours (not truly quiet when other work shares the machine: see"
           " the load average above)", quiet, QUIET_TARGET)
    if args.burn > 0:
        with burners(args.burn):
            time.sleep(2)
            print(f"loaded pass: {args.burn} CPU burners running, {load()}")
            loaded = asyncio.run(bench(args.kills, args.interval, args.spares))
        report(f"loaded ({args.burn} CPU burners)", loaded, LOADED_TARGET)


if __name__ == "__main__":
    main()
