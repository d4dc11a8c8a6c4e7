"""Leader failover with many agents: how soon every agent streams to the new leader.

Starts a private etcd, three coordinator processes (mutual TLS unless ``--plain``) and
worker processes that each run many SIMULATED agents: the real stream client
(agent/stream/session.py) over an in-memory runtime, each with its own host certificate,
all three coordinator addresses configured as a real agent has them. Units are deployed so
every host has instances and routes. Then, ``--rounds`` times, the leader is killed
(SIGKILL: no resignation, so its lease must run out) and the bench prints:

- election: the kill to the new leader's key in etcd (the lease TTL; etcd's to decide);
- agents on the new leader: the election to each agent's registration with it
  (p50 / p99 / last), target: every agent within 1 s;
- the new leader's route plan: the election to each agent's first route command from it
  (p50 / p99 / last), target: within 2 s;
- where the CPU went in the 2 s after the election: the new leader, the simulated agents'
  worker processes, etcd, and everything else on the machine (other people's tests and
  benchmarks share it: the busiest other processes are printed at the start).

The killed coordinator is started again (a follower) before the next round.

Usage: python bench/failover.py --agents 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster
sys.path.insert(0, str(Path(__file__).resolve().parent))  # coordinator_scale

from abuse import machine
from coordinator_scale import BenchRuntime, deploy_all, percentile, poll
from local_cluster.cluster import ControlPlane
from scale_fleet import identity

from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2
from common.stream_commands import AgentCommand, StartInstance, StopInstance
from common.transport import TlsSettings, create_channel

ONE_SECOND = 1.0
PRODUCT_LIVENESS = {"heartbeat_interval": 10.0, "liveness_grace": 10.0, "report_interval": 1.0}
"""The coordinator's defaults (the local cluster's are seconds, for tests): a host's
liveness lease then outlives an election, as in production."""
TWO_SECONDS = 2.0


class TimedRuntime(BenchRuntime):
    """BenchRuntime that notes when each route command arrived (wall clock)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.route_times: list[float] = []

    async def execute(self, command: AgentCommand) -> None:
        if not isinstance(command, (StartInstance, StopInstance)):
            self.route_times.append(time.time())
        await super().execute(command)


class TimedStream(CoordinatorStream):
    """The real stream client, noting each registration: (wall time, coordinator id)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registrations: list[tuple[float, str]] = []

    def _registered(self, pb: agent_pb2.Registered) -> None:
        super()._registered(pb)
        self.registrations.append((time.time(), pb.coordinator_id))


def worker(targets: tuple[str, ...], hosts: list[tuple[int, str, TlsSettings | None]],
           running: Any, collect: Any, results: Any, stop: Any) -> None:
    async def main() -> None:
        runtimes = [TimedRuntime(identity(i, b), 1) for i, b, _ in hosts]
        streams = [TimedStream(r, StreamSettings(targets, tls=tls or TlsSettings()))
                   for r, (_, _, tls) in zip(runtimes, hosts, strict=True)]
        tasks = []
        for stream in streams:
            tasks.append(asyncio.create_task(stream.run()))
            await asyncio.sleep(0.002)  # do not open every stream in the same instant
        while not stop.is_set():
            running.value = sum(len(r.instances) for r in runtimes)
            if collect.is_set():
                results.put([(r._identity.host_id, s.registrations, r.route_times)
                             for r, s in zip(runtimes, streams, strict=True)])
                collect.clear()
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def leader_key(plane: ControlPlane) -> str:
    """The id of the leader in etcd, or ""."""
    value = plane.etcd.dump(plane.prefix + "/leader").get(plane.prefix + "/leader")
    return str(json.loads(value).get("id", "")) if value else ""


def elected_after(plane: ControlPlane, old: str, timeout: float = 60.0) -> tuple[str, float]:
    """Poll etcd until a leader other than ``old`` holds the key; (its id, wall time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = leader_key(plane)
        if leader and leader != old:
            return leader, time.time()
        time.sleep(0.005)
    raise TimeoutError(f"no new leader within {timeout:g}s")


def gather(collects: list[Any], results: Any, count: int) -> list[tuple[str, Any, Any]]:
    for event in collects:
        event.set()
    rows: list[tuple[str, Any, Any]] = []
    for _ in collects:
        rows.extend(results.get(timeout=60))
    assert len(rows) == count, (len(rows), count)
    return rows


class CpuWindow:
    """CPU seconds the given processes and the whole machine spent since ``start``."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.parts = {name: [psutil.Process(pid) for pid in pids]
                      for name, pids in parts.items()}
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.parts.items():
            out[name] = 0.0
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    out[name] += times.user + times.system
                except psutil.Error:
                    pass
        total = psutil.cpu_times()
        out["machine"] = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        return out

    def used(self) -> dict[str, float]:
        after = self._sample()
        return {name: after[name] - self.before[name] for name in after}

    def report(self, seconds: float) -> str:
        used = self.used()
        ours = sum(v for k, v in used.items() if k != "machine")
        shown = ", ".join(f"{name} {value:.2f}" for name, value in used.items()
                          if name != "machine")
        return (f"CPU seconds in the {seconds:g} s after the election "
                f"({os.cpu_count()} cores: {seconds * (os.cpu_count() or 1):g} at most): {shown}, "
                f"everything else {max(0.0, used['machine'] - ours):.2f}")


def profile(spy: str, out: Path, parts: dict[str, list[int]], seconds: float,
            round_: int) -> list[subprocess.Popen[bytes]]:
    """py-spy (``spy``) records each process of ``parts`` for ``seconds`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)),
                              "-r", "100", "--format", "raw", "-o",
                              str(out / f"round{round_}-{name.replace(' ', '-')}-{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pids in parts.items() for pid in pids]


def line(name: str, samples: list[float], target: float) -> str:
    if not samples:
        return f"{name}: no samples"
    last = max(samples)
    verdict = "met" if last <= target else "NOT met"
    return (f"{name}: p50 {percentile(samples, 0.5) * 1000:.0f} ms, p99 "
            f"{percentile(samples, 0.99) * 1000:.0f} ms, last {last * 1000:.0f} ms "
            f"(target: every one within {target:g} s: {verdict})")


async def deploy(plane: ControlPlane, address: str, buildings: list[str], units: int,
                 replicas: int) -> None:
    channel = create_channel(address, plane.client_tls)
    try:
        await deploy_all(admin_pb2_grpc.AdminStub(channel), buildings, units, replicas)
    finally:
        await channel.close()


def run(args: argparse.Namespace) -> None:
    plane = ControlPlane("bench-failover", prefix="/bench-failover", tls=not args.plain,
                         coordinator_settings={"log_level": args.log_level, "log_format": "text",
                                               "leader_lease_ttl": args.lease_ttl,
                                               **PRODUCT_LIVENESS})
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    procs: list[Any] = []
    try:
        print(machine())
        plane.start(coordinators=3)
        targets = tuple(c.address for c in plane.coordinators)
        buildings = [f"b{b:03d}" for b in range(max(1, args.agents // args.hosts_per_building))]
        started = time.monotonic()
        hosts = [(i, buildings[i // args.hosts_per_building % len(buildings)],
                  plane.pki.agent(f"h{i:05d}") if plane.pki else None)
                 for i in range(args.agents)]
        if plane.pki:
            print(f"{args.agents} host certificates in {time.monotonic() - started:.1f}s")
        collects, counters = [], []
        for w in range(args.workers):
            running, collect = ctx.Value("l", 0), ctx.Event()
            counters.append(running)
            collects.append(collect)
            proc = ctx.Process(target=worker, args=(targets, hosts[w::args.workers], running,
                                                    collect, results, stop))
            proc.start()
            procs.append(proc)
        leader = plane.leader()

        def listed() -> bool:
            with leader.channel() as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                hosts = stub.ListHosts(admin_pb2.ListHostsRequest(), timeout=30).hosts
                return bool(len(hosts) >= args.agents)

        asyncio.run(poll_sync(listed, "registrations"))
        total = len(buildings) * args.units * args.hosts_per_building
        asyncio.run(deploy(plane, leader.address, buildings, args.units,
                           args.hosts_per_building))
        asyncio.run(poll(lambda: sum(r.value for r in counters) >= total, "instances running"))
        print(f"{args.agents} agents, {total} instances running; 3 coordinators, "
              f"{'plain text' if args.plain else 'mutual TLS'}, lease TTL {args.lease_ttl}s, "
              f"heartbeat {PRODUCT_LIVENESS['heartbeat_interval']:g}s; "
              f"machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for round_ in range(1, args.rounds + 1):
            old = leader_key(plane)
            killed = next(c for c in plane.coordinators if c.name == old)
            steady = CpuWindow({"leader": [killed.pid]})
            time.sleep(args.settle)
            steady_cpu = steady.used()["leader"] / args.settle
            killed.kill()
            killed_at = time.time()
            new, elected_at = elected_after(plane, old)
            leading = next(c for c in plane.coordinators if c.name == new)
            parts = {"new leader": [leading.pid], "etcd": [plane.etcd.pid],
                     "simulated agents": [p.pid for p in procs]}
            window = CpuWindow(parts)
            spies = (profile(args.py_spy, Path(args.profile_dir), parts, TWO_SECONDS, round_)
                     if args.py_spy else [])
            time.sleep(TWO_SECONDS)
            cpu = window.report(TWO_SECONDS)
            for spy in spies:
                spy.wait()
            time.sleep(max(0.0, args.observe - TWO_SECONDS))
            rows = gather(collects, results, args.agents)
            joined, routed, missing = [], [], 0
            for _, registrations, route_times in rows:
                times = [t for t, cid in registrations if cid == new and t >= killed_at]
                if not times:
                    missing += 1
                    continue
                joined.append(max(0.0, times[0] - elected_at))
                first_route = [t for t in route_times if t >= times[0]]
                if first_route:
                    routed.append(max(0.0, first_route[0] - elected_at))
            print(f"round {round_}: killed {old}; {new} elected "
                  f"{(elected_at - killed_at) * 1000:.0f} ms after the kill (lease TTL)")
            print("  " + line("agents on the new leader after its election", joined,
                              ONE_SECOND))
            print("  " + line("first route command from the new leader", routed,
                              TWO_SECONDS))
            print("  " + cpu)
            print(f"  before the kill, the leader spent {steady_cpu:.2f} CPU seconds per second "
                  f"on {args.agents} agents' streams (each reports every second)")
            if args.log_level.upper() in ("INFO", "DEBUG"):
                print(leading.log_tail(args.log_lines))
            if missing:
                print(f"  {missing} of {args.agents} agents NOT on the new leader "
                      f"{args.observe:g}s after the election")
            killed.start()
    except Exception:
        print(plane.logs(200))
        raise
    finally:
        stop.set()
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
        plane.close()


async def poll_sync(check: Any, what: str, timeout: float = 600) -> None:
    """``check`` (blocking, may fail while a cluster starts) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(check):
                return
        except grpc.RpcError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--units", type=int, default=2, help="units per building")
    parser.add_argument("--hosts-per-building", type=int, default=25,
                        help="also the replicas of each unit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease-ttl", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds before each kill")
    parser.add_argument("--observe", type=float, default=10.0,
                        help="seconds after each election before counting")
    parser.add_argument("--plain", action="store_true", help="no TLS (plain text)")
    parser.add_argument("--py-spy", default="", metavar="PATH",
                        help="profile the new leader, etcd and the workers for 2 s after each "
                             "election with this py-spy (raw stacks into --profile-dir)")
    parser.add_argument("--profile-dir", default="/tmp/failover-profile")
    parser.add_argument("--log-level", default="WARNING", help="the coordinators' log level")
    parser.add_argument("--log-lines", type=int, default=40,
                        help="with --log-level INFO: the new leader's last log lines shown")
    args = parser.parse_args()
    args.hosts_per_building = min(args.hosts_per_building, args.agents)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args)
    except queue.Empty:
        sys.exit("a worker did not answer in time")


if __name__ == "__main__":
    main()
