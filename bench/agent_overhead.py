"""Agent overhead: this process is the agent (AgentService with its monitor, storage
checks, GC schedules and health checks at default intervals, and its /metrics endpoint as
the daemon serves it) supervising N idle demo instances; prints its RSS and average CPU
over the measured window, then how long /metrics takes to answer and the CPU a Prometheus
scrape every 15 s adds. Figures only.

    python bench/agent_overhead.py [--instances 50] [--seconds 60] [--scrapes 40]

The scrapes come from a child process (its own CPU is not the agent's), one after another;
the agent's extra CPU per scrape is its CPU over the scrapes minus what it would have used
in that time anyway (its rate over the measured window).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import AgentConfig
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot
from agent.metrics import AgentMetrics
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService
from common.metrics_http import MetricsServer, serve_metrics

IMAGE = "landlord/demo-app:1.0.0"
ADDRESS = "127.0.0.2"
MIB = 1024 * 1024
SCRAPE_INTERVAL_S = 15.0
"""Prometheus' usual scrape interval."""
SCRAPER = """
import json, sys, time, urllib.request
url, count = sys.argv[1], int(sys.argv[2])
urllib.request.urlopen(url, timeout=10).read()  # warm-up, not counted
times, size = [], 0
for _ in range(count):
    start = time.perf_counter()
    size = len(urllib.request.urlopen(url, timeout=10).read())
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "size": size}))
"""


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


async def measure_scrapes(endpoint: MetricsServer, me: psutil.Process, base_rate: float,
                          count: int) -> None:
    """``count`` scrapes of /metrics from a child process: answer times and extra CPU."""
    cpu_before, wall_before = me.cpu_times(), time.monotonic()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, endpoint.url, str(count),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    cpu_after, wall = me.cpu_times(), time.monotonic() - wall_before
    found = json.loads(out)
    times = sorted(t * 1000 for t in found["times"])
    used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    per_scrape = max(0.0, used - base_rate * wall) / count
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"/metrics answer ({found['size'] / 1024:.0f} KiB) over {count} scrapes: median "
          f"{statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms"
          f" (target < 50 ms)")
    print(f"agent CPU per scrape {per_scrape * 1000:.1f} ms; scraped every "
          f"{SCRAPE_INTERVAL_S:g} s: +{per_scrape / SCRAPE_INTERVAL_S * 100:.3f} % of one core"
          f" (target < 0.2 %)")


async def run(instances: int, seconds: float, profile: str | None, scrapes: int) -> None:
    loaded = psutil.Process().memory_info().rss  # the agent's modules imported, nothing run
    data = Path(tempfile.mkdtemp(prefix="landlord-overhead-"))
    config = AgentConfig(host_id=f"overhead{os.getpid()}", advertise_address=ADDRESS,
                         data_dir=data, run_dir=data / "run", labels=("landlord.bench=1",),
                         bandwidth=False, stop_grace=2.0, metrics_listen=f"{ADDRESS}:0")
    service = AgentService(config, DockerRuntime())
    await service.open()
    metrics = AgentMetrics()  # wired as agent/daemon.py wires it (no stream, no data plane)
    service.bus.listen(metrics.on_event)
    metrics.watch(service.records.all, service.monitor.figures)
    endpoint = await serve_metrics(config.metrics_endpoint, metrics.registry, "agent",
                                   refresh=metrics.refresh)
    assert endpoint is not None, f"cannot serve /metrics on {config.metrics_listen}"
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
              f" (target < 50 MB); of it {loaded / MIB:.1f} MiB before any instance (the"
              " imported libraries: docker SDK, grpc, cryptography, prometheus_client);"
              f" unique to the process (USS) {me.memory_full_info().uss / MIB:.1f} MiB")
        print(f"agent CPU {used / wall * 100:.2f} % of one core over {wall:.0f} s"
              f" (target < 1 %)")
        print(f"threads {me.num_threads()}, open files {len(me.open_files())}")
        await measure_scrapes(endpoint, me, used / wall, scrapes)
    finally:
        await endpoint.close()
        stop.set()
        await loops
        await asyncio.gather(*(service.stop_instance(s.instance_id, grace=2) for s in specs),
                             return_exceptions=True)
        await service.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the measured window")
    parser.add_argument("--scrapes", type=int, default=40, help="/metrics requests timed")
    args = parser.parse_args()
    asyncio.run(run(args.instances, args.seconds, args.profile, args.scrapes))


if __name__ == "__main__":
    main()
