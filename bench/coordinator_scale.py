"""Coordinator at scale: many simulated agents on real gRPC streams, one real coordinator.

Starts a private etcd and one coordinator process, then worker processes that each run many
SIMULATED agents (``bench/scale_fleet.py``: one stream and certificate per agent on
loopback, reports computed once and replayed, so the agents' CPU stays small). Hosts are
grouped in buildings; every building gets ``containers`` units of
``hosts-per-building`` replicas, so each host runs ``containers`` instances. In steady state
every agent reports its instances' usage every 5 s in one report, as the agent does
(``--changed``: the percentage of them whose usage changed, all by default).

Printed first: the deploy phase (every unit published and deployed, up to PUBLISHING
buildings at once, until the agents report every instance running) and where its time
goes: publish calls, deploy calls, and the wait after the last deploy (agents starting,
status writes). Then, over a steady-state window, coordinator CPU (% of one core), RSS and
etcd writes per second; then, with the agents still reporting, the time from a probe agent
sending a status change to the admin API (polled every 5 ms) showing it, p50/p99.

Mutual TLS by default (every simulated host has its own certificate); ``--plain`` for plain
text. Issue 18's target size is ``--agents 5000 --containers 30`` (150,000 instances);
``make bench`` runs the default, smaller one.

Usage: python bench/coordinator_scale.py --agents 5000 --containers 30 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scale_fleet

from local_cluster.cluster import ControlPlane
from scale_fleet import USAGE_INTERVAL, identity, worker

from agent.runtime.protocol import OutputPiece
from agent.stream.endpoint import ChangeBatch
from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from common.stream_commands import (
    AgentCommand,
    ExecStream,
    ReadLogs,
    StartInstance,
    StopInstance,
)
from common.stream_messages import ObservedInstance, Registration
from common.transport import TlsSettings, create_channel

IMAGE = "bench:1"


class BenchRuntime:
    """AgentEndpoint: instances appear running at once; usage of a few changes every second."""

    async def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        yield OutputPiece(end=True, error="simulated bench hosts have no output")

    def __init__(self, identity: Registration, changed: int) -> None:
        self._identity = identity
        self.changed_per_report = changed
        self.instances: dict[str, ObservedInstance] = {}
        self._pending: dict[str, ObservedInstance] = {}
        self._removed: set[str] = set()
        self._last = 0.0
        self.routes = 0
        self.sent_at: dict[int, float] = {}

    def registration(self) -> Registration:
        return replace(self._identity, instances=tuple(self.instances.values()),
                       images=(IMAGE,))

    async def next_changes(self, timeout: float) -> ChangeBatch:
        now = time.monotonic()
        if not self._pending and not self._removed:
            due = self._last + 1.0 - now if self.instances else timeout
            await asyncio.sleep(min(timeout, max(0.0, due)))
        if self.instances and time.monotonic() - self._last >= 1.0:
            self._last = time.monotonic()
            for iid in random.sample(sorted(self.instances),
                                     min(self.changed_per_report, len(self.instances))):
                report = replace(self.instances[iid], usage={"cpu_cores": random.random()})
                self._pending[iid] = report
        batch = ChangeBatch(changed=list(self._pending.values()), removed=sorted(self._removed))
        for report in batch.changed:
            if report.restarts:
                self.sent_at[report.restarts] = time.monotonic()
        self._pending, self._removed = {}, set()
        return batch

    async def execute(self, command: AgentCommand) -> None:
        if isinstance(command, StartInstance):
            if command.instance_id not in self.instances:
                report = ObservedInstance(command.instance_id, self._identity.host_id,
                                          command.apartment, command.unit, command.version,
                                          command.slot, "running", 1.0,
                                          self._identity.address, command.port)
                self.instances[command.instance_id] = self._pending[command.instance_id] = report
        elif isinstance(command, StopInstance):
            if command.instance_id in self.instances:
                del self.instances[command.instance_id]
                self._removed.add(command.instance_id)
        else:
            self.routes += 1

    def bump(self, restarts: int) -> None:
        """A visible status change on the first instance (restarts counter)."""
        iid = sorted(self.instances)[0]
        self.instances[iid] = self._pending[iid] = replace(self.instances[iid], restarts=restarts)


async def retried(call: Any, request: Any) -> Any:
    """Retry what a loaded machine makes fail for a while (watch lag, a lost lead)."""
    for attempt in range(30):
        try:
            return await call(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and (
                "already runs" in details
                or (attempt and "already has an active rollout" in details)
            ):
                return None  # an earlier attempt got through (its answer was lost)
            retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
                                   grpc.StatusCode.DEADLINE_EXCEEDED) or "lead" in details \
                or "no alive host" in details or "try again shortly" in details
            if not retry or attempt == 29:
                raise
            await asyncio.sleep(1.0)
    return None


PUBLISHING = 6
"""Publishes at once: under the coordinator's max_publishes_waiting for one identity."""


@dataclass
class DeployTimes:
    """Where the deploy phase's time goes: every call's own duration, by kind."""

    publishes: list[float] = field(default_factory=list)
    deploys: list[float] = field(default_factory=list)
    calls_s: float = 0.0
    """Wall time from the first publish to the last deploy's answer."""

    async def timed(self, into: list[float], call: Any, request: Any) -> None:
        began = time.monotonic()
        await retried(call, request)
        into.append(time.monotonic() - began)

    def lines(self, running_s: float) -> list[str]:
        def part(name: str, took: list[float]) -> str:
            if not took:
                return f"  {name}: none"
            return (f"  {name}: {len(took)} calls, {sum(took):.1f}s in all (up to "
                    f"{PUBLISHING} at once), mean {statistics.mean(took) * 1000:.0f} ms, "
                    f"p99 {percentile(took, 0.99) * 1000:.0f} ms")

        return [f"deploy phase {self.calls_s + running_s:.1f}s:",
                part("publishes", self.publishes), part("deploys", self.deploys),
                f"  calls (publishes then deploys, {PUBLISHING} buildings at once): "
                f"{self.calls_s:.1f}s wall",
                f"  after the last deploy, until every instance was reported running "
                f"(agents starting, status writes): {running_s:.1f}s"]


async def deploy_all(admin: Any, buildings: list[str], units: int,
                     replicas: int) -> DeployTimes:
    started = time.monotonic()
    times = DeployTimes()
    turns = asyncio.Semaphore(PUBLISHING)

    async def building(name: str) -> None:
        async with turns:
            await publish_and_deploy(name)

    async def publish_and_deploy(name: str) -> None:
        for u in range(units):
            spec = types_pb2.UnitSpec(apartment="bench", unit=f"{name}-u{u}", image=IMAGE,
                                      service_port=30000 + u,
                                      resources=types_pb2.Resources(cpu_millis=10,
                                                                    memory_bytes=1 << 20))
            await times.timed(times.publishes, admin.PublishVersion,
                              admin_pb2.PublishVersionRequest(
                                  spec=spec, version="1.0.0",
                                  changes=types_pb2.ChangeSet(features=["f"])))
            await times.timed(times.deploys, admin.Deploy, admin_pb2.DeployRequest(
                apartment="bench", unit=f"{name}-u{u}", version="1.0.0", building=name,
                replicas=replicas))

    await asyncio.gather(*(building(b) for b in buildings))
    times.calls_s = time.monotonic() - started
    return times


async def probe(admin: Any, target: str, samples: int, interval: float,
                tls: TlsSettings | None = None) -> list[float]:
    """Latency from a probe agent's report leaving to the admin API showing the change."""
    runtime = BenchRuntime(identity(PROBE, "probe"), changed=0)
    stream = CoordinatorStream(runtime, StreamSettings((target,), tls=tls or TlsSettings()))
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(stream.connected.wait(), 30)
        spec = types_pb2.UnitSpec(apartment="bench", unit="probe", image=IMAGE,
                                  resources=types_pb2.Resources(cpu_millis=10))
        await retried(admin.PublishVersion, admin_pb2.PublishVersionRequest(
            spec=spec, version="1.0.0", changes=types_pb2.ChangeSet(features=["f"])))
        await retried(admin.Deploy, admin_pb2.DeployRequest(
            apartment="bench", unit="probe", version="1.0.0", building="probe"))
        await poll(lambda: bool(runtime.instances), "the probe instance")
        latencies = []
        request = admin_pb2.ListInstancesRequest(host_id=runtime.registration().host_id)
        for restarts in range(1, samples + 1):
            runtime.bump(restarts)
            while True:
                found = (await admin.ListInstances(request)).instances
                if found and found[0].restarts == restarts and restarts in runtime.sent_at:
                    latencies.append((time.monotonic() - runtime.sent_at[restarts]) * 1000)
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(interval)
        return latencies
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def poll(check: Any, what: str, refresh: Any = None, timeout: float = 600) -> None:
    """Until ``check()`` holds (calling ``refresh()`` first each round)."""
    deadline = time.monotonic() + timeout
    while True:
        if refresh is not None:
            await refresh()
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout}s")
        await asyncio.sleep(0.2)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


LIVENESS_GRACE = 10.0
PROBE = 99_999
"""The probe agent's index (host h99999)."""


async def run(args: argparse.Namespace) -> None:
    # mutual TLS as the product runs (every simulated host has its own certificate), unless
    # --plain
    plane = ControlPlane("bench-scale", prefix="/bench", tls=not args.plain,
                         coordinator_settings={
        "heartbeat_interval": 10.0, "report_interval": 1.0, "liveness_grace": LIVENESS_GRACE,
        "log_level": "WARNING", "leader_lease_ttl": 5, "log_format": "text",
        # without certificates every simulated host is the peer 127.0.0.1, and the streams
        # of one worker process share one connection (grpc reuses it across channels)
        "max_connections_per_identity": 0, "max_calls_per_identity": args.agents + 64,
        "max_streams_per_connection": args.agents + 64})
    etcd = plane.etcd
    procs: list[Any] = []
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    try:
        coordinator = plane.start().coordinator
        buildings = [f"b{b:03d}" for b in range(max(1, args.agents // args.hosts_per_building))]
        began = time.monotonic()
        hosts = [(i, buildings[i // args.hosts_per_building % len(buildings)],
                  plane.pki.agent(f"h{i:05d}") if plane.pki else None)
                 for i in range(args.agents)]
        print(f"mutual TLS: {args.agents} host certificates in "
              f"{time.monotonic() - began:.1f}s" if plane.pki else "plain text (--plain)")
        print(f"sharing the machine ({os.cpu_count()} cores): etcd, the coordinator and "
              f"{args.workers} worker processes of simulated agents; load average before "
              f"the run {os.getloadavg()[0]:.1f}")
        counters = []
        for w in range(args.workers):
            running, reports = ctx.Value("l", 0), ctx.Value("l", 0)
            counters.append((running, reports))
            proc = ctx.Process(target=worker, args=(coordinator.address, hosts[w::args.workers],
                                                    IMAGE, args.changed, running, reports,
                                                    stop))
            proc.start()
            procs.append(proc)
        channel = create_channel(coordinator.address, plane.client_tls)
        admin = admin_pb2_grpc.AdminStub(channel)

        registered_count = [0]

        async def registered() -> None:
            hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
            registered_count[0] = len(hosts)

        started = time.monotonic()
        await poll(lambda: registered_count[0] >= args.agents, "registrations",
                   refresh=registered)
        print(f"{args.agents} agents registered in {time.monotonic() - started:.1f}s")
        total = args.agents * args.containers
        revision = etcd.count_revision()
        times = await deploy_all(admin, buildings, args.containers, args.hosts_per_building)
        called = time.monotonic()
        await poll(lambda: sum(r.value for r, _ in counters) >= total, "instances running")
        running_s = time.monotonic() - called
        took = times.calls_s + running_s
        print(f"{total} instances deployed and running in {took:.1f}s "
              f"({total / took:.0f}/s; target 50,000 in < 60 s) "
              f"({len(buildings)} buildings x {args.containers} units x "
              f"{args.hosts_per_building} replicas)")
        print("\n".join(times.lines(running_s)))
        print(f"  etcd revisions during the phase: {etcd.count_revision() - revision}")
        # let the start-up burst settle (statuses, routes, event-history trimming)
        settled, last = time.monotonic(), etcd.count_revision()
        while time.monotonic() - settled < 5 and time.monotonic() - started < 900:
            await asyncio.sleep(1)
            if etcd.count_revision() != last:
                settled, last = time.monotonic(), etcd.count_revision()

        # steady state first, with nothing but the agents' reports
        proc_info = psutil.Process(coordinator.pid)
        sharing = {"etcd": [psutil.Process(etcd.pid)],
                   "simulated agents": [psutil.Process(p.pid) for p in procs]}
        cpu0, rev0, rep0 = proc_info.cpu_times(), etcd.count_revision(), sum(
            r.value for _, r in counters)
        shared0 = {name: cpu_seconds(ps) for name, ps in sharing.items()}
        t0 = time.monotonic()
        await asyncio.sleep(args.duration)
        elapsed = time.monotonic() - t0
        cpu1, rev1, rep1 = proc_info.cpu_times(), etcd.count_revision(), sum(
            r.value for _, r in counters)
        print("what shares the machine, steady state: " + ", ".join(
            f"{name} {(cpu_seconds(ps) - shared0[name]) / elapsed * 100:.0f}% of one core"
            for name, ps in sharing.items()) + f" ({args.workers} processes, "
            f"{args.agents} streams); load average {os.getloadavg()[0]:.1f}")
        # then visibility: the probe's stream reports at most once a second, one sample each
        latencies = await probe(admin, coordinator.address, max(10, int(args.duration)), 0.0,
                                plane.pki.agent(f"h{PROBE:05d}") if plane.pki else None)
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed * 100
        rss = proc_info.memory_info().rss / (1 << 20)
        print(f"steady state over {elapsed:.1f}s: {(rep1 - rep0) / elapsed:.0f} reports/s "
              f"(usage every {USAGE_INTERVAL} s per host, {args.changed}% of its instances "
              f"changed)")
        print(f"coordinator CPU {cpu:.0f}% of one core, RSS {rss:.0f} MiB (target < 100 %)")
        bound = args.agents / LIVENESS_GRACE
        writes = (rev1 - rev0) / elapsed
        print(f"etcd writes {writes:.2f}/s with no real change (target: at most one per host "
              f"per liveness grace, {bound:.0f}/s)")
        p99 = percentile(latencies, 0.99)
        print(f"report-to-admin visibility over {len(latencies)} probes: "
              f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {p99:.1f} ms (target < 250 ms),"
              f" mean {statistics.mean(latencies):.1f} ms")
        await channel.close()
    except Exception:
        print(plane.logs(400))
        raise
    finally:
        stop.set()
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
        plane.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--hosts-per-building", type=int, default=25,
                        help="also the replicas of each unit (up to 1000)")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plain", action="store_true",
                        help="plain text instead of mutual TLS")
    parser.add_argument("--changed", type=int, default=100,
                        help="percent of a host's instances whose usage changed between "
                             "two of its usage reports")
    args = parser.parse_args()
    args.hosts_per_building = min(args.hosts_per_building, args.agents)
    # SIGTERM unwinds like Ctrl-C, so every process this bench started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
