"""Agent overhead: this process is the agent (AgentService with its monitor, storage
checks, GC schedules and health checks at default intervals) supervising N idle demo
instances; prints its RSS and average CPU over the measured window. Figures only.

    python bench/agent_overhead.py [--instances 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import AgentConfig
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService

IMAGE = "landlord/demo-app:1.0.0"
ADDRESS = "127.0.0.2"
MIB = 1024 * 1024


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((ADDRESS, 0))
        sockets.append(sock)
    ports = [int(s.getsockname()[1]) for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


async def run(instances: int, seconds: float, profile: str | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="landlord-overhead-"))
    config = AgentConfig(host_id=f"overhead{os.getpid()}", advertise_address=ADDRESS,
                         data_dir=data, run_dir=data / "run", labels=("landlord.bench=1",),
                         bandwidth=False, stop_grace=2.0)
    service = AgentService(config, DockerRuntime())
    await service.open()
    me = psutil.Process()
    specs = [InstanceSpec(apartment="bench", unit="idle", version="1.0.0", slot=Slot.BLUE,
                          instance_id=f"idle-{i}", image=IMAGE, port=port,
                          health=HealthSpec(),  # default interval and thresholds
                          resources=ResourceSpec(cpu=0.1, memory=64 * MIB))
             for i, port in enumerate(free_ports(instances))]
    stop = asyncio.Event()
    loops = asyncio.create_task(service.run(stop))
    try:
        started = time.monotonic()
        for batch in range(0, len(specs), 10):
            await asyncio.gather(*(service.start_instance(s) for s in specs[batch:batch + 10]))
        running = sum(v.state == "running" for v in service.instances())
        print(f"{running}/{instances} instances running after {time.monotonic() - started:.0f} s")
        await asyncio.sleep(5)  # settle after the start burst
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        cpu_before, wall_before = me.cpu_times(), time.monotonic()
        rss_peak = 0
        end = wall_before + seconds
        while time.monotonic() < end:
            rss_peak = max(rss_peak, me.memory_info().rss)
            await asyncio.sleep(1)
        cpu_after, wall = me.cpu_times(), time.monotonic() - wall_before
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        print(f"agent RSS now {me.memory_info().rss / MIB:.1f} MiB, peak {rss_peak / MIB:.1f} MiB"
              f" (target < 80 MB)")
        print(f"agent CPU {used / wall * 100:.2f} % of one core over {wall:.0f} s"
              f" (target < 3 %)")
        print(f"threads {me.num_threads()}, open files {len(me.open_files())}")
    finally:
        stop.set()
        await loops
        await asyncio.gather(*(service.stop_instance(s.instance_id, grace=2) for s in specs),
                             return_exceptions=True)
        await service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the measured window")
    args = parser.parse_args()
    asyncio.run(run(args.instances, args.seconds, args.profile))


if __name__ == "__main__":
    main()
