"""Zero-downtime rollouts, measured on a real cluster (prints figures; nothing passes or fails).

A private etcd, one ``landlord-coordinator`` and three ``landlord-agent``s on 127.0.0.2-4
(Docker + HAProxy; tests/e2e/real_cluster.py) run the `make demo` scenario: demo app 1.0.0,
1.1.0 (good), 2.0.0 (ERROR_RATE=0.2) and 1.2.0 (good) published; 1.0.0 deployed with three
replicas; then, under continuous load on every host's entry point (one client thread per
host, a new connection per request; scripts/demo_cluster/load.py):

1. canary to 1.1.0 (promoted), 2. canary to 2.0.0 (rolls itself back), 3. blue-green to
1.2.0 with an immediate switch (promoted).

Meanwhile a child process polls every host's HAProxy runtime API every few ms for the unit's
effective weights per version (bench/zero_downtime_watch.py). Printed:

- requests and failures, split into "caused by the bad version" (5xx that 2.0.0 answered
  itself, named in the body) and "caused by switching" (everything else); per rollout too;
- per rollout and step: when each host's HAProxy applied the step's weights (after the
  recorded step start), the spread between hosts, the measured share of the new version
  per host and overall against the target;
- the rollback: from the failing evaluation (the step's ended_at) to each host's HAProxy
  sending nothing more to 2.0.0, and to the client's last 2.0.0 answer per host;
- request times per host per rollout (p50/p99/max; a slow request is no failure but a
  hiccup), and one ``ZERO-DOWNTIME {json}`` line with the headline figures.

Targets printed next to the figures: 0 failures caused by switching; rollback complete within
1 s of the failing evaluation; spread between hosts under 100 ms.

    flock /tmp/landlord-e2e.lock .venv/bin/python bench/zero_downtime.py [--fast]
        [--monitor 4s] [--poll-ms 3] [--pause 0.01]

Everything started here (processes, containers labelled landlord.test=1 of hosts h1-h3,
HAProxy, the temporary directory with etcd's data) is removed at exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import grpc  # noqa: E402
from demo import BLUE_GREEN, CHANGES, latency_comparison_only  # noqa: E402
from demo_cluster.load import LoadGenerator, ask  # noqa: E402
from demo_cluster.processes import DemoError, wait_for  # noqa: E402
from demo_cluster.report import PhaseResult, classify_failures  # noqa: E402
from demo_cluster.rollouts import Cli, follow_rollout, seconds_of  # noqa: E402
from zero_downtime_load import TimedAnswer, TimedLoad  # noqa: E402
from zero_downtime_report import (  # noqa: E402
    RolloutTimes,
    StepTimes,
    failure_lines,
    last_answer_from,
    latency_lines,
    no_server_lines,
    rollback_lines,
    rollback_off,
    rollout_lines,
    spread_ms,
    step_applied,
)
from zero_downtime_watch import HostSocket, WeightChange, WeightWatcher  # noqa: E402

from agent.dataplane import HaproxyPaths  # noqa: E402
from agent.stream.mapping import plane_unit  # noqa: E402
from common.gen.landlord.v1 import admin_pb2, types_pb2  # noqa: E402
from tests.e2e.real_cluster import RealCluster, free_port_on_all  # noqa: E402
from tests.integration.agent.agent_fixtures import ensure_demo_images  # noqa: E402

HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}
ADDRESSES = list(HOSTS.values())
APARTMENT, NAME = "bench", "web"
UNIT = f"{APARTMENT}/{NAME}"
BAD = "2.0.0"
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]  # published in semver order
SWITCHING_TARGET = 0
ROLLBACK_TARGET_S = 1.0
SPREAD_TARGET_MS = 100.0


class BenchCluster(RealCluster):
    PREFIX = "/landlord-bench-zero-downtime"


def say(line: str = "") -> None:
    print(line, flush=True)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def canary_flags(args: argparse.Namespace) -> list[str]:
    steps = "25,100" if args.fast else "25,50,100"
    monitor = args.monitor or ("4s" if args.fast else "6s")
    return ["--strategy", "canary", "--steps", steps, "--monitor", monitor,
            "--step-delay", "1s", "--inconclusive-deadline", "30s",
            "--max-error-rate", "5%", "--min-requests", "20"]


def rollout_times(stub: Any, name: str, rollout_id: str) -> RolloutTimes:
    info = stub.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=NAME,
                                                       rollout_id=rollout_id), timeout=5)
    return RolloutTimes(
        name=name,
        strategy="canary" if info.strategy == types_pb2.STRATEGY_CANARY else "blue-green",
        from_version=info.from_version, to_version=info.to_version, phase=info.phase,
        reason=info.reason, started_at=seconds_of(info.started_at),
        ended_at=seconds_of(info.ended_at),
        steps=tuple(StepTimes(int(s.index), float(s.target_percent), str(s.outcome),
                              seconds_of(s.started_at), seconds_of(s.ended_at))
                    for s in info.steps))


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target_lines(rollouts: list[RolloutTimes], answers: list[TimedAnswer],
                 changes: list[WeightChange], now: float
                 ) -> tuple[list[str], dict[str, object]]:
    """The headline figures, one line each, with the target and whether it was met; and
    the same as a JSON-safe dict."""
    failures = classify_failures(answers, BAD)
    switching = failures.switching
    figures: dict[str, object] = {
        "requests": len(answers), "failed": failures.total,
        "failed_bad_version": failures.bad_version_5xx, "failed_switching": switching,
        "rollback_ms": None, "rollback_client_ms": None, "spread_ms": {}}
    spreads: dict[str, float | None] = {}
    lines = [f"  failed requests caused by switching: {switching} (target "
             f"{SWITCHING_TARGET}) {_met(switching <= SWITCHING_TARGET)}"]
    for rollout in rollouts:
        found = rollback_off(rollout, changes, ADDRESSES)
        if found is None:
            continue
        evaluated, off = found
        delays = [None if c is None else c.at - evaluated for c in off.values()]
        started = min(s.started_at for s in rollout.steps)
        seen = [last_answer_from(answers, h, rollout.to_version, started) for h in ADDRESSES]
        client = max((t - evaluated for t in seen if t is not None), default=None)
        if any(d is None for d in delays):
            lines.append("  rollback to 100 % stable: not seen on every host's HAProxy")
        else:
            worst = max(d for d in delays if d is not None)
            figures["rollback_ms"] = round(worst * 1000, 1)
            figures["rollback_client_ms"] = None if client is None else round(client * 1000, 1)
            lines.append(f"  rollback, failing evaluation -> 100 % stable on every host's "
                         f"HAProxy: {worst * 1000:.1f} ms (target < {ROLLBACK_TARGET_S:g} s) "
                         f"{_met(worst < ROLLBACK_TARGET_S)}; last {rollout.to_version} answer "
                         f"seen by the client: "
                         + ("none" if client is None else f"{client * 1000:+.1f} ms"))
    for rollout in rollouts:
        for step in rollout.steps:
            applied = step_applied(rollout, step, changes, ADDRESSES, now)
            spread = spread_ms([None if c is None else c.at for c in applied.values()])
            what = (f"{rollout.strategy} {rollout.to_version} step {step.index + 1} "
                    f"({step.target_percent:g}%)")
            spreads[what] = None if spread is None else round(spread, 1)
            lines.append(f"  spread between hosts, {what}: "
                         + ("n/a" if spread is None else
                            f"{spread:.1f} ms (target < {SPREAD_TARGET_MS:g} ms) "
                            f"{_met(spread < SPREAD_TARGET_MS)}"))
    figures["spread_ms"] = spreads
    return lines, figures


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster = BenchCluster({"heartbeat_interval": 2.0, "liveness_grace": 10.0,
                                     "stop_grace": 3.0})
        self.workdir = self.cluster.workdir
        self.load: TimedLoad | None = None
        self.watcher: WeightWatcher | None = None
        self.port = 0
        self.rollouts: list[tuple[RolloutTimes, float, float]] = []
        """(record, phase began, phase settled) for each rollout under load."""
        self.notes: list[str] = []

    @property
    def coordinator(self) -> str:
        return self.cluster.coordinator.address

    def instances_of(self, version: str) -> bool:
        with self.cluster.admin() as admin:
            found = admin.ListInstances(admin_pb2.ListInstancesRequest(
                apartment=APARTMENT, unit=NAME), timeout=5).instances
        return len(found) == 3 and all(
            i.version == version and i.state == types_pb2.INSTANCE_STATE_RUNNING for i in found)

    def alive_hosts(self) -> bool:
        with self.cluster.admin() as admin:
            hosts = admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5).hosts
        return sum(1 for h in hosts if h.status == "alive") == 3

    def start(self) -> None:
        say(f"== cluster: private etcd, coordinator, agents h1-h3 (work dir {self.workdir})")
        ensure_demo_images()
        self.cluster.start()
        for host_id, address in HOSTS.items():
            self.cluster.add_agent(host_id, address, "demo")
        wait_for(self.alive_hosts, 60, "three agents alive")
        self.port = free_port_on_all(ADDRESSES)
        cli = Cli(self.coordinator, say)
        for version in VERSIONS:
            cli.run(["units", "publish", UNIT, version, "--image", f"landlord/demo-app:{version}",
                     "--service-port", str(self.port), "--health-path", "/healthz",
                     "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
                     "--memory", "64Mi", *CHANGES[version]], quiet=True)

    def start_watching(self) -> None:
        unit = plane_unit(APARTMENT, NAME)
        sockets = []
        for agent in self.cluster.agents:
            paths = HaproxyPaths(agent.data_dir / "haproxy")
            sockets.append(HostSocket(agent.address, paths.admin_socket,
                                      paths.map_file(unit, "version")))
        self.watcher = WeightWatcher(sockets, f"be.{unit}", self.workdir / "weights.jsonl",
                                     self.args.poll_ms).start()

    def rollout(self, name: str, version: str, flags: list[str], expect: str,
                stable_after: str, retried: bool = False) -> None:
        say()
        say(f"== {name}")
        with self.cluster.admin() as admin:
            try:
                previous = admin.GetRollout(admin_pb2.GetRolloutRequest(
                    apartment=APARTMENT, unit=NAME), timeout=5).rollout_id
            except grpc.RpcError:
                previous = ""
        began = time.time()
        cli = Cli(self.coordinator, say)
        proc = cli.start(["deploy", UNIT, version, "--building", "demo", "--replicas", "3",
                          *flags, "--wait"], self.workdir / f"deploy-{version}.log")
        try:
            result: PhaseResult = follow_rollout(
                self.coordinator, APARTMENT, NAME, previous, proc,
                self.load or LoadGenerator(ADDRESSES, self.port), name, say)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if (expect == "promoted" and result.phase == "rolled_back" and not retried
                and latency_comparison_only(result.reason)):
            note = (f"{name}: rolled back by the canary-vs-stable latency comparison alone "
                    f"({result.reason}); deployed once more")
            say("  RETRY: " + note)
            self.notes.append(note)
            self.wait_only_instances(result.from_version)
            self.rollout(name, version, flags, expect, stable_after, retried=True)
            return
        if result.phase != expect:
            raise DemoError(f"{name}: expected {expect}, got {result.phase}: {result.reason}")
        self.wait_only_instances(stable_after)
        if self.load is None:
            wait_for(lambda: all(ask(f"http://{a}:{self.port}/") == (200, stable_after)
                                 for a in ADDRESSES), 90, f"every host answering {stable_after}")
            return
        mark = time.time()
        load = self.load
        wait_for(lambda: load.only(stable_after, time.time() - 2.0)
                 and time.time() - mark >= 2.0, 90,
                 f"2 s of only {stable_after} answers on every host")
        with self.cluster.admin() as admin:
            times = rollout_times(admin, name, result.rollout_id)
        self.rollouts.append((times, began, time.time()))

    def wait_only_instances(self, version: str) -> None:
        try:
            wait_for(lambda: self.instances_of(version), 30,
                     f"only the three {version} instances running")
        except DemoError as exc:
            note = f"{exc} (old instances left over; carrying on)"
            say("  NOTE: " + note)
            self.notes.append(note)

    def run(self) -> None:
        self.start()
        self.rollout("first deploy of 1.0.0 (3 replicas)", "1.0.0",
                     ["--warmup", "1s", "--cleanup-delay", "1s"], "promoted", "1.0.0")
        self.start_watching()
        load = TimedLoad(ADDRESSES, self.port, pause=self.args.pause, max_seconds=900)
        load.start()
        self.load = load
        say()
        say(f"== load: one client per host on http://127.0.0.{{2,3,4}}:{self.port}/, "
            f"HAProxy weights polled every {self.args.poll_ms:g} ms")
        canary = canary_flags(self.args)
        self.rollout("canary to 1.1.0 (good)", "1.1.0", canary, "promoted", "1.1.0")
        self.rollout(f"canary to {BAD} (20 % of its answers are 500s)", BAD, canary,
                     "rolled_back", "1.1.0")
        self.rollout("blue-green to 1.2.0, immediate switch", "1.2.0", BLUE_GREEN, "promoted",
                     "1.2.0")

    def report(self) -> None:
        assert self.load is not None and self.watcher is not None
        self.load.stop()
        self.watcher.stop()
        answers = self.load.timed()
        changes = self.watcher.changes()
        now = time.time()
        say()
        say("== figures")
        say(f"HAProxy weight samples recorded: {len(changes)} changes over {len(HOSTS)} hosts")
        say("all rollouts under load:")
        for line in failure_lines(answers, BAD):
            say(line)
        say("each host's HAProxy, for the unit, while the load ran:")
        for line in no_server_lines(changes, ADDRESSES):
            say(line)
        for times, began, settled in self.rollouts:
            say()
            for line in rollout_lines(times, answers, changes, ADDRESSES, now, SPREAD_TARGET_MS):
                say(line)
            during = [a for a in answers if began <= a.at <= settled]
            for line in [*failure_lines(during, BAD, indent="    ", examples=4),
                         *latency_lines(during, ADDRESSES, indent="    ")]:
                say(line)
            if times.phase == "rolled_back":
                for line in rollback_lines(times, answers, changes, ADDRESSES,
                                           ROLLBACK_TARGET_S):
                    say(line)
        say()
        say("== against the targets")
        lines, figures = target_lines([r for r, _, _ in self.rollouts], answers, changes, now)
        for line in lines:
            say(line)
        say("ZERO-DOWNTIME " + json.dumps(figures, sort_keys=True))
        for note in self.notes:
            say(f"NOTE: {note}")

    def close(self) -> None:
        if self.load is not None:
            self.load.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="canary steps 25,100 (else 25,50,100)")
    parser.add_argument("--monitor", default="",
                        help="canary monitor time per step (default 4s with --fast, else 6s)")
    parser.add_argument("--poll-ms", type=float, default=3.0,
                        help="pause between two polls of the HAProxy runtime APIs")
    parser.add_argument("--pause", type=float, default=0.01,
                        help="pause of each client thread between two requests (s)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    began = time.monotonic()
    status = 0
    try:
        bench.run()
        bench.report()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        status = 130
    except (DemoError, TimeoutError, grpc.RpcError) as exc:
        say(f"bench: FAILED: {exc}")
        say(bench.cluster.logs(40))
        status = 1
    finally:
        # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.close()
    say(f"(took {time.monotonic() - began:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
