#!/usr/bin/env python3
"""`make demo`: a real Landlord cluster on this machine, three rollouts under load.

1. builds landlord/demo-app 1.0.0, 1.1.0, 1.2.0, 2.0.0 (2.0.0 answers 20 % 500s);
2. starts a coordinator (shared etcd 127.0.0.1:2379, prefix /landlord-demo, wiped first) and
   three agents on 127.0.0.2-4 as background processes (logs, pids, data under .run/demo/);
3. publishes the versions with the `landlord` CLI and deploys 1.0.0 on three hosts;
4. under steady load on every host's entry point: a canary to 1.1.0 (promoted), a canary to
   2.0.0 (rolls itself back), a blue-green to 1.2.0 with an immediate switch (promoted);
5. prints a summary computed from what the load saw and the rollout records (and one
   ``DEMO-SUMMARY {json}`` line), and leaves the cluster running.

`scripts/demo.py --down` stops it all. LANDLORD_DEMO_FAST=1 (or --fast) shortens the steps.
Exit status: 0 when every rollout behaved, 1 with a message saying what did not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from demo_cluster.load import LoadGenerator, ask
from demo_cluster.processes import (
    HOSTS,
    RUN_DIR,
    DemoCluster,
    DemoError,
    free_port_on_all,
    stop_demo,
    wait_for,
)
from demo_cluster.report import (
    PhaseResult,
    classify_failures,
    rollback_seconds,
    summary_dict,
    switch_seconds,
)
from demo_cluster.rollouts import Cli, follow_rollout

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2

ROOT = Path(__file__).resolve().parents[1]
UNIT, APARTMENT, NAME = "demo/web", "demo", "web"
BAD = "2.0.0"
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
CHANGES = {
    "1.0.0": ["--feature", "first release"],
    "1.1.0": ["--feature", "faster answers"],
    "1.2.0": ["--fix", "counter survives restarts"],
    "2.0.0": ["--breaking", "new API", "--env", "ERROR_RATE=0.2"],
}
ADDRESSES = list(HOSTS.values())


def say(line: str = "") -> None:
    print(line, flush=True)


def canary_flags(fast: bool) -> list[str]:
    steps, monitor = ("25,100", "5s") if fast else ("25,50,100", "6s")
    return ["--strategy", "canary", "--steps", steps, "--monitor", monitor,
            "--step-delay", "1s", "--inconclusive-deadline", "30s",
            "--max-error-rate", "5%", "--min-requests", "20"]


BLUE_GREEN = ["--strategy", "blue-green", "--switch", "immediate", "--warmup", "1s",
              "--cleanup-delay", "2s"]


def current_id(coordinator: str) -> str:
    with grpc.insecure_channel(coordinator) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            reply = stub.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=NAME),
                                    timeout=5)
        except grpc.RpcError:
            return ""
        return str(reply.rollout_id)


def alive_hosts(coordinator: str) -> int:
    with grpc.insecure_channel(coordinator) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        hosts = stub.ListHosts(admin_pb2.ListHostsRequest(), timeout=5).hosts
        return sum(1 for h in hosts if h.status == "alive")


def latency_comparison_only(reason: str) -> bool:
    """The rollout failed on the latency comparison with the stable version, nothing else."""
    return "latency p95" in reason and "vs stable" in reason and "error rate" not in reason


def only_instances_of(coordinator: str, version: str) -> bool:
    """The unit runs exactly three instances, all of ``version`` and running; old ones gone."""
    with grpc.insecure_channel(coordinator) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        found = stub.ListInstances(admin_pb2.ListInstancesRequest(apartment=APARTMENT,
                                                                  unit=NAME), timeout=5)
    return len(found.instances) == 3 and all(
        i.version == version and i.state == types_pb2.INSTANCE_STATE_RUNNING
        for i in found.instances)


def all_serve(port: int, version: str) -> bool:
    return all(ask(f"http://{a}:{port}/") == (200, version) for a in ADDRESSES)


class Demo:
    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.cluster = DemoCluster()
        self.phases: list[PhaseResult] = []
        self.workarounds: list[str] = []
        self.load: LoadGenerator | None = None
        self.port = 0

    def rollout(self, name: str, version: str, flags: list[str], expect: str,
                stable_after: str, retried: bool = False) -> PhaseResult:
        """Deploy through `landlord deploy --wait`, follow it, check it ended as expected and
        that the load then sees only ``stable_after`` on every host."""
        say()
        say(f"== {name}")
        cli = Cli(self.cluster.coordinator, say)
        previous = current_id(self.cluster.coordinator)
        began = time.time()
        args = ["deploy", UNIT, version, "--building", "demo", "--replicas", "3", *flags,
                "--wait"]
        proc = cli.start(args, RUN_DIR / f"deploy-{version}.log")
        load = self.load or LoadGenerator(ADDRESSES, self.port)
        result = follow_rollout(self.cluster.coordinator, APARTMENT, NAME, previous, proc, load,
                                name, say)
        want_exit = 0 if expect == "promoted" else 3
        say(f"  rollout {result.rollout_id}: {result.phase}; `landlord deploy --wait` exited "
            f"{result.cli_exit} (its output: {RUN_DIR / f'deploy-{version}.log'})")
        if (expect == "promoted" and result.phase == "rolled_back" and not retried
                and latency_comparison_only(result.reason)):
            note = (f"RETRY: {name} was rolled back by the canary-vs-stable latency "
                    f"comparison alone ({result.reason}); that comparison (p95 ratio <= 1.5, "
                    "not settable through `landlord deploy`) trips on a busy machine, so the "
                    "demo deploys the same version once more")
            say("  " + note)
            self.workarounds.append(note)
            self.old_instances_gone(result.from_version)
            return self.rollout(name, version, flags, expect, stable_after, retried=True)
        if result.phase != expect or result.cli_exit != want_exit:
            hint = ""
            if "latency p95" in result.reason and "vs stable" in result.reason:
                hint = ("\n  note: this is the coordinator's canary-vs-stable latency "
                        "comparison (ComparisonCriteria, p95 ratio <= 1.5, judged again "
                        "and again during the step); `landlord deploy` cannot relax it, "
                        "and a busy machine can trip it for a good version")
            raise DemoError(f"{name}: expected {expect} (CLI exit {want_exit}), got "
                            f"{result.phase} (CLI exit {result.cli_exit}): {result.reason}"
                            + hint)
        self.old_instances_gone(stable_after)
        if self.load is None:
            wait_for(lambda: all_serve(self.port, stable_after), 90,
                     f"every entry point answering {stable_after}", interval=0.5)
            self.phases.append(result)
            return result
        mark = time.time()
        # settled = the last 2 s (a sliding window, not one fixed at `mark`) held only
        # answers from the stable version, on every host
        wait_for(lambda: self.load is not None
                 and self.load.only(stable_after, time.time() - 2.0)
                 and time.time() - mark >= 2.0, 90,
                 f"2 s of only {stable_after} answers on every host", interval=0.25)
        settled = time.time()
        answers = self.load.answers(began, settled)
        result.requests = len(answers)
        result.failures = classify_failures(answers, BAD)
        if expect == "rolled_back":
            failed = [s for s in result.steps if s.outcome == "failed"]
            if not failed:
                raise DemoError(f"{name}: rolled back without a failed step")
            # the step's evaluation time is its ended_at in the record
            step_end = self._step_end(result, failed[-1].index)
            result.rollback_seconds = rollback_seconds(answers, step_end, stable_after)
        if result.strategy == "blue-green":
            result.switch_seconds = switch_seconds(answers, version)
        say(f"  settled: every host answers {stable_after} only; this phase: "
            f"{result.requests} requests, {result.failures.total} failed "
            f"({result.failures.bad_version_5xx} 5xx from {BAD}, "
            f"{result.failures.switching} caused by switching)")
        self.phases.append(result)
        return result

    def old_instances_gone(self, version: str) -> None:
        """Wait until only the three ``version`` instances run (the old ones drained and
        stopped by the coordinator after the rollout's cleanup delay)."""
        wait_for(lambda: only_instances_of(self.cluster.coordinator, version), 60,
                 f"only the three {version} instances left running (old ones stopped)",
                 interval=0.5)

    def _step_end(self, result: PhaseResult, index: int) -> float:
        from demo_cluster.rollouts import seconds_of

        with grpc.insecure_channel(self.cluster.coordinator) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            info = stub.GetRollout(admin_pb2.GetRolloutRequest(
                apartment=APARTMENT, unit=NAME, rollout_id=result.rollout_id), timeout=5)
        return seconds_of(info.steps[index].ended_at)

    def run(self) -> dict[str, object]:
        say("== building images landlord/demo-app " + " ".join(VERSIONS))
        subprocess.run([str(ROOT / "scripts" / "build-demo-image.sh"), *VERSIONS], check=True)
        for line in stop_demo(lambda _: None):
            say(f"  stopped previous demo: {line}")
        say(f"== starting coordinator and agents (logs, pids, data: {RUN_DIR})")
        self.cluster.start()
        coordinator = self.cluster.coordinator
        wait_for(lambda: alive_hosts(coordinator) == 3, 60, "three agents alive")
        cli = Cli(coordinator, say)
        cli.run(["hosts", "list"])
        self.port = free_port_on_all(ADDRESSES, 18080)
        say()
        say(f"== publishing {UNIT} (entry point :{self.port} on every host)")
        for version in VERSIONS:
            cli.run(["units", "publish", UNIT, version, "--image", f"landlord/demo-app:{version}",
                     "--service-port", str(self.port), "--health-path", "/healthz",
                     "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
                     "--memory", "64Mi", *CHANGES[version]])
        self.rollout("first deploy of 1.0.0 (3 replicas, one per host)", "1.0.0",
                     ["--warmup", "1s", "--cleanup-delay", "1s"], "promoted", "1.0.0")
        self.load = LoadGenerator(ADDRESSES, self.port, pause=0.03, max_seconds=400).start()
        say()
        say(f"== load: one client thread per host on http://127.0.0.{{2,3,4}}:{self.port}/")
        self.rollout("canary to 1.1.0 (good)", "1.1.0", canary_flags(self.fast), "promoted",
                     "1.1.0")
        self.rollout("canary to 2.0.0 (20 % of its answers are 500s)", "2.0.0",
                     canary_flags(self.fast), "rolled_back", "1.1.0")
        self.rollout("blue-green to 1.2.0, immediate switch", "1.2.0", BLUE_GREEN, "promoted",
                     "1.2.0")
        self.load.stop()
        answers = self.load.answers()
        final_ok = all_serve(self.port, "1.2.0")
        if not final_ok:
            raise DemoError("1.2.0 is not answering on every host at the end")
        summary = summary_dict(self.phases[1:], len(answers), classify_failures(answers, BAD),
                               BAD, "1.2.0", final_ok)
        summary["workarounds"] = self.workarounds
        return summary


def print_summary(summary: dict[str, object], coordinator: str, port: int) -> None:
    say()
    say("== summary (from the load generator's answers and the rollout records)")
    say(f"  requests: {summary['total_requests']}, failed: {summary['failed_requests']} = "
        f"{summary['failed_bad_version_5xx']} answered 5xx by the bad version {BAD} + "
        f"{summary['failed_switching']} caused by switching (no answer, or 5xx from another "
        "version)")
    phases = summary["phases"]
    assert isinstance(phases, list)
    for phase in phases:
        say(f"  {phase['name']}: {phase['phase']} ({phase['requests']} requests, "
            f"{phase['failures']['total']} failed)")
        for step in phase["steps"]:
            measured = step["measured_percent"]
            shown = "n/a" if measured is None else f"{measured:.1f}%"
            say(f"    step {step['index'] + 1}: target {step['target_percent']:.0f}% -> "
                f"measured {shown} of {step['answers']} answers from {phase['to_version']} "
                f"({step['outcome']})")
        if phase["switch_seconds"] is not None:
            say(f"    switch: {phase['switch_seconds']:.2f} s from the first answer of "
                f"{phase['to_version']} to the last answer of any other version")
        if phase["rollback_seconds"] is not None:
            say(f"    rollback time: {phase['rollback_seconds']:.2f} s, from the failing step's "
                "evaluation (its ended_at in the rollout record) to the last answer on any host "
                "that was not a 200 from the stable version")
    workarounds = summary.get("workarounds") or []
    assert isinstance(workarounds, list)
    for note in workarounds:
        say(f"  NOTE: {note}")
    say(f"  final: {summary['final_version']} answers on every host "
        f"(http://127.0.0.{{2,3,4}}:{port}/)")
    say("DEMO-SUMMARY " + json.dumps(summary, sort_keys=True))
    say()
    say("The cluster keeps running. Explore it with the CLI:")
    say(f"  export LANDLORD_COORDINATOR={coordinator}")
    say("  .venv/bin/landlord hosts list")
    say("  .venv/bin/landlord instances list")
    say(f"  .venv/bin/landlord rollout history {UNIT}")
    say(f"  .venv/bin/landlord rollout status {UNIT}")
    say(f"  curl http://127.0.0.2:{port}/")
    say("Stop it with: make down   (or .venv/bin/python scripts/demo.py --down)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down", action="store_true", help="stop what the demo started")
    parser.add_argument("--fast", action="store_true",
                        default=os.environ.get("LANDLORD_DEMO_FAST") == "1",
                        help="shorter canary steps (also LANDLORD_DEMO_FAST=1)")
    args = parser.parse_args()
    if args.down:
        stopped = stop_demo(say)
        say("demo: stopped " + ", ".join(stopped) if stopped else "demo: nothing was running")
        return 0
    demo = Demo(args.fast)
    began = time.monotonic()
    try:
        summary = demo.run()
    except (DemoError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if demo.load is not None:
            demo.load.stop()
        say(f"demo: FAILED: {exc}")
        for name in demo.cluster.alive():
            say(f"demo: {name} is not running; last lines of {RUN_DIR / (name + '.log')}:")
            say(demo.cluster.log_tail(name))
        say("demo: the cluster is left as it is for inspection; stop it with `make down`")
        return 1
    print_summary(summary, demo.cluster.coordinator, demo.port)
    say(f"(demo took {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
