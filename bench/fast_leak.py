"""A fast memory leak caught before the OOM killer: the plan's case at full size.

The demo app leaks 120 MB/min (2 MiB/s) under a 256 MiB limit, so it reaches its limit in
about two minutes, well inside the 10-minute window of the slow-leak judgement. The agent
runs with its default timings (a resource sample every 5 s, high-water mark 85 %, horizon
6 periods). Prints a timeline (seconds since the instance was started) of the working
set and of the leak, dump, restart and OOM events, and exits non-zero when an OOM kill
comes before the leak event. Needs root, Docker and the demo image.

    python bench/fast_leak.py [--rate 120] [--limit-mib 256] [--after-restart 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster

from local_cluster.processes import free_port

from agent.config import AgentConfig
from agent.instances.events import AgentEvent, EventType
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService

IMAGE = "landlord/demo-app:1.0.0"
ADDRESS = "127.0.0.161"
MIB = 1024 * 1024
SHOWN = {EventType.MEMORY_LEAK, EventType.MEMORY_DUMP, EventType.STATE, EventType.CRASHED,
         EventType.LIMIT_EXCEEDED, EventType.MEMORY_PRESSURE, EventType.RECOVERY_ATTEMPT,
         EventType.RECOVERY_SUCCESS, EventType.RECOVERY_FAILURE, EventType.ESCALATION}


def line(event: AgentEvent, started: float) -> str:
    details = dict(event.details)
    if event.type == EventType.STATE:
        text = f"{details.get('from')} -> {details.get('to')} ({details.get('reason')})"
    elif event.type == EventType.MEMORY_LEAK:
        text = str(details.get("reason"))
    else:
        keep = ("kind", "generation", "resource", "usage", "limit", "action", "oom_killed",
                "path", "reason")
        text = ", ".join(f"{k}={details[k]}" for k in keep if k in details)
    return f"{event.time - started:7.1f} s  {event.type:<20} {text}"


async def watch(service: AgentService, started: float, out: list[AgentEvent],
                done: asyncio.Event, after_restart: float) -> None:
    async for event in service.bus.subscribe():
        if event.type not in SHOWN:
            continue
        out.append(event)
        print(line(event, started), flush=True)
        if (event.type == EventType.RECOVERY_SUCCESS
                and event.details.get("kind") == "memory_leak") or (
                event.type == EventType.CRASHED and event.details.get("oom_killed")):
            await asyncio.sleep(after_restart)
            done.set()


async def sample(service: AgentService, started: float, done: asyncio.Event,
                 period: float) -> None:
    while not done.is_set():
        figures = service.monitor.figures("leak-bench")
        if figures.get("memory_limit"):
            ws, limit = figures["memory_working_set"], figures["memory_limit"]
            print(f"{time.time() - started:7.1f} s  working set {ws / MIB:6.1f} MiB "
                  f"({ws / limit * 100:3.0f}% of {limit / MIB:.0f} MiB)", flush=True)
        await asyncio.sleep(period)


async def bench(rate: float, limit_mib: int, after_restart: float) -> int:
    data = Path(tempfile.mkdtemp(prefix="landlord-bench-"))
    config = AgentConfig(host_id=f"lk-bench{os.getpid()}", advertise_address=ADDRESS,
                         data_dir=data, run_dir=data / "run", labels=("landlord.bench=1",),
                         bandwidth=False)
    service = AgentService(config, DockerRuntime())
    await service.open()
    stop, done = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    spec = InstanceSpec(apartment="bench", unit="leaky", version="1.0.0", slot=Slot.BLUE,
                        instance_id="leak-bench", image=IMAGE, port=free_port(ADDRESS),
                        env={"LEAK_MB_PER_MIN": f"{rate:g}"},
                        health=HealthSpec(interval_s=2.0, timeout_s=1.0),
                        resources=ResourceSpec(cpu=1.0, memory=limit_mib * MIB))
    print(f"demo app leaking {rate:g} MB/min under {limit_mib} MiB; monitor every "
          f"{config.monitor_interval:g} s, high-water {config.leak_high_water:.0%}, horizon "
          f"{config.leak_horizon_periods:g} periods, slow-leak window {config.leak_window:g} s")
    events: list[AgentEvent] = []
    started = time.time()
    tasks = [asyncio.create_task(watch(service, started, events, done, after_restart)),
             asyncio.create_task(sample(service, started, done, config.monitor_interval))]
    client = docker.from_env()
    try:
        await service.start_instance(spec)
        await asyncio.wait_for(done.wait(), timeout=limit_mib / (rate / 60) * 3 + 60)
        ooms = list(client.events(
            since=int(started), until=int(time.time()) + 1, decode=True,
            filters={"event": "oom", "label": "landlord.instance=leak-bench"}))
    finally:
        for task in tasks:
            task.cancel()
        await service.stop_instance("leak-bench", grace=2)
        stop.set()
        await runner
        await service.close()
        client.close()
        shutil.rmtree(data, ignore_errors=True)
    leak = next((e for e in events if e.type == EventType.MEMORY_LEAK), None)
    oom = next((e for e in events if e.details.get("oom_killed")
                or e.details.get("action") == "oom_killed"), None)
    print(f"docker oom events: {len(ooms)}")
    if leak is None or (oom is not None and oom.time < leak.time) or ooms:
        print("FAIL: the OOM killer came first (or no leak was seen)")
        return 1
    print(f"leak caught {leak.time - started:.1f} s after the start, limit projected in "
          f"{leak.details.get('projected_s', 0):.0f} s; no OOM kill")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=120.0, help="MB (MiB) per minute")
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--after-restart", type=float, default=20.0,
                        help="seconds to keep watching after the restart")
    args = parser.parse_args()
    sys.exit(asyncio.run(bench(args.rate, args.limit_mib, args.after_restart)))


if __name__ == "__main__":
    main()
