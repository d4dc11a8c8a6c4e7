#!/usr/bin/env python3
"""`make demo`: a real Landlord cluster on this machine, three rollouts under load.

1. builds landlord/demo-app 1.0.0, 1.1.0, 1.2.0, 2.0.0 (2.0.0 answers 20 % 500s) and pushes
   them to the local registry (127.0.0.1:5000, started by scripts/services.sh), from which
   they are published: each version records its image's digest;
2. makes the cluster's certificates (a CA and one certificate per coordinator, host and
   admin, under .run/demo/pki/) and starts etcd (TLS, client certificates required), a
   coordinator and three agents on 127.0.0.2-4 as background processes, all speaking
   mutual TLS (logs, pids, data under .run/demo/), with the local cluster launcher
   (scripts/local_cluster/, also used by tests and benches);
3. publishes the versions with the `landlord` CLI and deploys 1.0.0 on three hosts;
4. under steady load on every host's entry point: a canary to 1.1.0 (promoted), a canary to
   2.0.0 (rolls itself back), a blue-green to 1.2.0 with an immediate switch (promoted);
5. prints a summary computed from what the load saw and the rollout records (and one
   ``DEMO-SUMMARY {json}`` line), shows that the CLI without a certificate is refused, prints
   the shell lines that point the CLI at the cluster as its admin, and leaves it running.

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

from local_cluster.cluster import LocalCluster, stop_recorded_cluster
from local_cluster.daemons import BIN
from local_cluster.images import DEMO_REGISTRY, DEMO_REPOSITORY, ensure_demo_images
from local_cluster.load import LoadGenerator
from local_cluster.processes import ClusterError
from local_cluster.report import classify_failures, summary_dict
from local_cluster.scenario import BAD, VERSIONS, DemoScenario, canary_flags

from common.transport import COORDINATOR_PORT

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("LANDLORD_DEMO_DIR",
                              Path(os.environ.get("LANDLORD_RUN_DIR", ROOT / ".run")) / "demo"))
UNIT, APARTMENT, NAME, BUILDING = "demo/web", "demo", "web", "demo"
PREFIX = "/landlord-demo"
DEMO_LABEL = "landlord.demo=1"
# Host ids demo-h1..3: an agent adopts every container labelled with its host id, so a test
# cluster's "h1" on the same Docker must not be the demo's host.
HOST_PREFIX = "demo-"
HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}
PREFERRED_COORDINATOR_PORT = COORDINATOR_PORT  # the CLI's default address
COORDINATOR_SETTINGS: dict[str, object] = {
    "id": "demo-coordinator",
    "heartbeat_interval": 2.0,
    "liveness_grace": 10.0,
    "stop_grace": 3.0,
    "log_format": "text",
    # instance host ports away from the default 20000-29999, which test clusters on the
    # same loopback addresses use
    "port_range_start": 31000,
    "port_range_end": 31999,
}


def say(line: str = "") -> None:
    print(line, flush=True)


def start_cluster() -> LocalCluster:
    """etcd, coordinator and agents as detached processes under RUN_DIR (logs, pids, data,
    certificates in pki/), over mutual TLS; they outlive this script."""
    cluster = LocalCluster("demo", workdir=RUN_DIR, prefix=PREFIX, labels=[DEMO_LABEL],
                           host_prefix=HOST_PREFIX, coordinator_settings=COORDINATOR_SETTINGS)
    cluster.start_etcd()
    coordinator = cluster.add_coordinator(name="coordinator",
                                          preferred_port=PREFERRED_COORDINATOR_PORT)
    (RUN_DIR / "coordinator.address").write_text(coordinator.address + "\n")
    for host, address in HOSTS.items():
        cluster.add_agent(host, address, BUILDING)
    return cluster


class Demo:
    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.scenario: DemoScenario | None = None

    def run(self) -> dict[str, object]:
        say(f"== building images {DEMO_REPOSITORY} {' '.join(VERSIONS)}, pushing them to "
            f"{DEMO_REGISTRY}")
        ensure_demo_images(VERSIONS)
        for line in stop_recorded_cluster(RUN_DIR, [DEMO_LABEL], lambda _: None):
            say(f"  stopped previous demo: {line}")
        say(f"== starting coordinator and agents (logs, pids, data: {RUN_DIR})")
        scenario = self.scenario = DemoScenario(start_cluster(), APARTMENT, NAME, BUILDING, say)
        scenario.wait_hosts_alive()
        scenario.cli().run(["hosts", "list"])
        say()
        say(f"== publishing {UNIT}")
        port = scenario.publish(preferred_port=18080)
        say(f"  (entry point :{port} on every host)")
        scenario.first_deploy()
        load = LoadGenerator(scenario.addresses, port, pause=0.03, max_seconds=400).start()
        say()
        say(f"== load: one client thread per host on http://127.0.0.{{2,3,4}}:{port}/")
        scenario.under_load(load, canary_flags(self.fast))
        operations = scenario.operations_under_load(load)
        load.close()
        answers = load.answers()
        final_ok = scenario.all_serve("1.2.0")
        if not final_ok:
            raise ClusterError("1.2.0 is not answering on every host at the end")
        summary = summary_dict(scenario.phases[1:], len(answers),
                               classify_failures(answers, BAD), BAD, "1.2.0", final_ok)
        summary["operations"] = operations
        summary["workarounds"] = scenario.notes
        return summary


def refused_without_certificate(coordinator: str) -> str:
    """The CLI's one-line refusal when it has no certificate (the demo shows it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDLORD_")}
    done = subprocess.run([str(BIN / "landlord"), "--coordinator", coordinator, "--timeout", "3",
                           "hosts", "list"],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode == 0:
        raise ClusterError("the coordinator answered a CLI without a client certificate")
    return done.stderr.strip()


def print_summary(summary: dict[str, object], cluster: LocalCluster, port: int) -> None:
    coordinator = cluster.coordinator.address
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
    operations = summary.get("operations") or []
    assert isinstance(operations, list)
    for operation in operations:
        say(f"  {operation['name']}: {operation['requests']} requests, "
            f"{operation['failed']} failed ({operation['seconds']:.1f} s)")
    workarounds = summary.get("workarounds") or []
    assert isinstance(workarounds, list)
    for note in workarounds:
        say(f"  NOTE: {note}")
    say(f"  final: {summary['final_version']} answers on every host "
        f"(http://127.0.0.{{2,3,4}}:{port}/)")
    say("DEMO-SUMMARY " + json.dumps(summary, sort_keys=True))
    say()
    say("Every part speaks mutual TLS (certificates in "
        f"{cluster.pki.root if cluster.pki else '-'}). Without a client certificate the CLI is "
        "refused:")
    say(f"  $ landlord hosts list\n  {refused_without_certificate(coordinator)}")
    say()
    say("The cluster keeps running. Point the CLI at it as its admin, then explore:")
    say(f"  export LANDLORD_COORDINATOR={coordinator}")
    for name, value in cluster.cli_env().items():
        say(f"  export {name}={value}")
    say("  .venv/bin/landlord hosts list")
    say("  .venv/bin/landlord instances list")
    say(f"  .venv/bin/landlord rollout history {UNIT}")
    say(f"  .venv/bin/landlord rollout status {UNIT}")
    say(f"  curl http://127.0.0.2:{port}/")
    say("Prometheus metrics (docs/metrics.md; loopback, no certificate needed):")
    say(f"  curl http://{cluster.coordinator.metrics_address}/metrics     # coordinator")
    for agent in cluster.agents:
        say(f"  curl http://{agent.metrics_address}/metrics     # agent {agent.host_id} "
            f"(and /healthz)")
    for agent in cluster.agents:
        say(f"  curl http://{agent.haproxy_metrics_address}/metrics     # HAProxy of "
            f"{agent.host_id}")
    say("The rollouts in a browser (read-only; docs/metrics.md, section Web view):")
    say(f"  http://{cluster.coordinator.metrics_address}/ui/")
    say("Stop it with: make down   (or .venv/bin/python scripts/demo.py --down)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down", action="store_true", help="stop what the demo started")
    parser.add_argument("--fast", action="store_true",
                        default=os.environ.get("LANDLORD_DEMO_FAST") == "1",
                        help="shorter canary steps (also LANDLORD_DEMO_FAST=1)")
    args = parser.parse_args()
    if args.down:
        stopped = stop_recorded_cluster(RUN_DIR, [DEMO_LABEL], say)
        say("demo: stopped " + ", ".join(stopped) if stopped else "demo: nothing was running")
        return 0
    demo = Demo(args.fast)
    began = time.monotonic()
    try:
        summary = demo.run()
    except (ClusterError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        scenario = demo.scenario
        if scenario is not None and scenario.load is not None:
            scenario.load.close()
        say(f"demo: FAILED: {exc}")
        for process in scenario.cluster.exited() if scenario else []:
            say(f"demo: {process.name} is not running; last lines of {process.log_path}:")
            say(process.log_tail(30))
        say("demo: the cluster is left as it is for inspection; stop it with `make down`")
        return 1
    assert demo.scenario is not None
    print_summary(summary, demo.scenario.cluster, demo.scenario.port)
    say(f"(demo took {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
