"""Zero-downtime rollouts, measured on a real cluster (prints figures; nothing passes or fails).

A private etcd, one ``landlord-coordinator`` and three ``landlord-agent``s on 127.0.0.2-4
(Docker + HAProxy), started by the local cluster launcher (scripts/local_cluster), run the
`make demo` scenario (scripts/local_cluster/scenario.py): demo app 1.0.0, 1.1.0 (good),
2.0.0 (ERROR_RATE=0.2) and 1.2.0 (good) published; 1.0.0 deployed with three replicas;
then, under continuous load on every host's entry point (one client thread per host, a new
connection per request; scripts/local_cluster/load.py):

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

Targets printed next to the figures (issue 18's rollout speed): 0 failures caused by
switching; rollback from the failing evaluation to 100 % stable on every host < 100 ms p99
over ``--rollbacks`` runs (the bad canary is deployed that many times in all, 20 by
default); spread between hosts for one switch < 20 ms p99 over every step.

    flock /tmp/landlord-docker.lock .venv/bin/python bench/zero_downtime.py [--fast]
        [--monitor 4s] [--poll-ms 3] [--pause 0.01]

Everything started here (processes, containers labelled landlord.cluster=bench-zero-downtime
of hosts bench-h1..3, HAProxy, the temporary directory with etcd's data) is removed at exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import grpc  # noqa: E402
from local_cluster.cluster import LocalCluster  # noqa: E402
from local_cluster.load import Answer, LoadGenerator  # noqa: E402
from local_cluster.processes import ClusterError  # noqa: E402
from local_cluster.report import PhaseResult, classify_failures  # noqa: E402
from local_cluster.rollouts import seconds_of  # noqa: E402
from local_cluster.scenario import BAD, DemoScenario, canary_flags  # noqa: E402
from zero_downtime_report import (  # noqa: E402
    SETTLE_S,
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
from tests.integration.agent.agent_fixtures import ensure_demo_images  # noqa: E402

HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}
ADDRESSES = list(HOSTS.values())
APARTMENT, NAME = "bench", "web"
SWITCHING_TARGET = 0
ROLLBACK_TARGET_S = 0.1
SPREAD_TARGET_MS = 20.0


def say(line: str = "") -> None:
    print(line, flush=True)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def rollout_times(scenario: DemoScenario, result: PhaseResult) -> RolloutTimes:
    info = scenario.rollout_record(result.rollout_id)
    return RolloutTimes(
        name=result.name, strategy=result.strategy, from_version=info.from_version,
        to_version=info.to_version, phase=info.phase, reason=info.reason,
        started_at=seconds_of(info.started_at), ended_at=seconds_of(info.ended_at),
        steps=tuple(StepTimes(int(s.index), float(s.target_percent), str(s.outcome),
                              seconds_of(s.started_at), seconds_of(s.ended_at))
                    for s in info.steps))


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target_lines(rollouts: list[RolloutTimes], answers: list[Answer],
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
    rollbacks: list[float] = []
    measured: list[float] = []
    lines = [f"  failed requests caused by switching: {switching} (target "
             f"{SWITCHING_TARGET}) {_met(switching <= SWITCHING_TARGET)}"]
    for rollout in rollouts:
        found = rollback_off(rollout, changes, ADDRESSES)
        if found is None:
            continue
        evaluated, off = found
        delays = [None if c is None else c.at - evaluated for c in off.values()]
        started = min(s.started_at for s in rollout.steps)
        seen = [last_answer_from(answers, h, rollout.to_version, started,
                                 rollout.ended_at + SETTLE_S) for h in ADDRESSES]
        client = max((t - evaluated for t in seen if t is not None), default=None)
        if any(d is None for d in delays):
            lines.append("  rollback to 100 % stable: not seen on every host's HAProxy")
        else:
            worst = max(d for d in delays if d is not None)
            rollbacks.append(worst * 1000)
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
            if spread is not None:
                measured.append(spread)
            lines.append(f"  spread between hosts, {what}: "
                         + ("n/a" if spread is None else
                            f"{spread:.1f} ms (target < {SPREAD_TARGET_MS:g} ms) "
                            f"{_met(spread < SPREAD_TARGET_MS)}"))
    figures["spread_ms"] = spreads
    for what, values, target in (("rollback to 100 % stable on every host", rollbacks,
                                  ROLLBACK_TARGET_S * 1000),
                                 ("spread between hosts per switch", measured,
                                  SPREAD_TARGET_MS)):
        if values:
            p99 = percentile(values, 0.99)
            figures[f"{what.split()[0]}_p99_ms"] = round(p99, 1)
            lines.append(f"  {what}, over {len(values)}: p50 {percentile(values, 0.5):.1f} ms, "
                         f"p99 {p99:.1f} ms, max {max(values):.1f} ms (target p99 < "
                         f"{target:g} ms) {_met(p99 < target)}")
    return lines, figures


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the max for p99 of fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster = LocalCluster(
            "bench-zero-downtime", labels=["landlord.bench=1"], host_prefix="bench-",
            coordinator_settings={"heartbeat_interval": 2.0, "liveness_grace": 10.0,
                                  "stop_grace": 3.0})
        self.workdir = self.cluster.workdir
        self.scenario: DemoScenario | None = None
        self.load: LoadGenerator | None = None
        self.watcher: WeightWatcher | None = None
        self.times: dict[str, RolloutTimes] = {}
        """Each rollout's record, read as soon as it ended (etcd keeps only recent ones)."""

    def keep_times(self) -> None:
        assert self.scenario is not None
        for phase in self.scenario.phases[1:]:
            if phase.rollout_id not in self.times:
                self.times[phase.rollout_id] = rollout_times(self.scenario, phase)

    def start_watching(self) -> None:
        unit = plane_unit(APARTMENT, NAME)
        sockets = []
        for agent in self.cluster.agents:
            paths = HaproxyPaths(agent.data_dir / "haproxy")
            sockets.append(HostSocket(agent.address, paths.admin_socket,
                                      paths.map_file(unit, "version")))
        self.watcher = WeightWatcher(sockets, f"be.{unit}", self.workdir / "weights.jsonl",
                                     self.args.poll_ms).start()

    def run(self) -> None:
        say(f"== cluster: private etcd, coordinator, agents h1-h3 (work dir {self.workdir})")
        ensure_demo_images()
        self.cluster.start()
        for host, address in HOSTS.items():
            self.cluster.add_agent(host, address, "demo")
        scenario = self.scenario = DemoScenario(self.cluster, APARTMENT, NAME, "demo", say,
                                                strict_cleanup=False)
        scenario.wait_hosts_alive()
        port = scenario.publish(quiet=True, network_mode=self.args.network_mode)
        scenario.first_deploy()
        self.start_watching()
        self.load = LoadGenerator(ADDRESSES, port, pause=self.args.pause,
                                  max_seconds=900).start()
        say()
        say(f"== load: one client per host on http://127.0.0.{{2,3,4}}:{port}/, "
            f"HAProxy weights polled every {self.args.poll_ms:g} ms")
        flags = canary_flags(self.args.fast, self.args.monitor
                             or ("4s" if self.args.fast else "6s"))
        scenario.under_load(self.load, flags)
        self.keep_times()
        for run in range(2, self.args.rollbacks + 1):  # under_load rolled back once
            scenario.rollout(f"canary to {BAD} again (rollback {run} of "
                             f"{self.args.rollbacks})", BAD, canary_flags(True, "3s"),
                             "rolled_back", "1.2.0")
            self.keep_times()

    def report(self) -> None:
        assert self.load is not None and self.watcher is not None
        assert self.scenario is not None
        self.load.close()
        self.watcher.stop()
        answers = self.load.answers()
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
        phases = [(self.times[p.rollout_id], p.load_began, p.load_settled)
                  for p in self.scenario.phases[1:]]
        for times, began, settled in phases:
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
        lines, figures = target_lines([r for r, _, _ in phases], answers, changes, now)
        for line in lines:
            say(line)
        say("ZERO-DOWNTIME " + json.dumps(figures, sort_keys=True))
        for note in self.scenario.notes:
            say(f"NOTE: {note}")

    def close(self) -> None:
        if self.load is not None:
            self.load.close()
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
    parser.add_argument("--rollbacks", type=int, default=20,
                        help="bad canaries rolled back in all, for the rollback p99")
    parser.add_argument("--network-mode", choices=["bridge", "host"], default="",
                        help="the demo versions' network mode (default: the fleet default)")
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
    except (ClusterError, TimeoutError, grpc.RpcError) as exc:
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
