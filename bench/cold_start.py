"""Cold start of a collected unit: a request held at an entry point until it is answered.

Starts etcd, a coordinator (idle check every second) and one agent with Docker and HAProxy
on 127.0.0.184, deploys the demo app with snapshot state and a 3 s idle timeout, then
ROUNDS times: waits until its only instance is collected (nothing calls it), sends one
GET / to the entry point and times it from send to answer. That is the whole wake path:
HAProxy's hold script asks the agent, the agent's next report (1 s interval) asks the
leader, the leader commits the wake and sends StartInstance, the agent restores the state
backup and starts a container, its health check passes (1 s interval), the route gives
it a weight and HAProxy's own check (1 s interval, rise 2) marks it up; then the held
request goes on to it. Figures only, no asserts. Needs root, Docker, the demo image,
etcd and the registry (the project's services).

    python bench/cold_start.py [--rounds 5]

Target: p95 at most 5 s. The fixed periods in the path add up to about 4 s at worst (a
report, a health probe, two HAProxy checks), plus a container start (about half a second
on an idle host); 5 s is also well inside the 30 s the request may be held, so a client
with an ordinary 30 s timeout never notices more than a slow first answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster

from local_cluster.cluster import LocalCluster
from local_cluster.images import demo_image, ensure_demo_images
from local_cluster.processes import free_port_on_all

ADDRESS = "127.0.0.184"
UNIT = "bench/cold"
TARGET_P95_S = 5.0
LANDLORD = Path(sys.executable).parent / "landlord"


class Cli:
    def __init__(self, cluster: LocalCluster) -> None:
        self.address = cluster.coordinator.address
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("LANDLORD_")},
                    **cluster.cli_env()}

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(LANDLORD), "--coordinator", self.address, *args,
                               "--output", "json"], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"landlord {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))


def get(port: int, timeout: float = 40.0) -> int:
    conn = http.client.HTTPConnection(ADDRESS, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def state(cli: Cli) -> str:
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return str(found[0]["state"]) if found else ""


def wait_for(cli: Cli, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while state(cli) != wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"{UNIT} not {wanted} within {timeout:g} s (is {state(cli)})")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_demo_images()
    cluster = LocalCluster(f"bench-cold-{os.getpid()}", prefix="/landlord-bench-cold",
                           host_prefix="id-",
                           coordinator_settings={"idle_check_interval": 1.0,
                                                 "heartbeat_interval": 2.0})
    try:
        cluster.start()
        cluster.add_agent("cold1", ADDRESS, "bench")
        cli = Cli(cluster)
        port = free_port_on_all([ADDRESS])
        cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"),
                 "--port", "0", "--service-port", str(port), "--health-path", "/healthz",
                 "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
                 "--memory", "64Mi", "--state-mode", "snapshot", "--env", "STATE_DIR=/state",
                 "--idle-timeout", "3s")
        time.sleep(3)  # the agent registers
        cli.run("deploy", UNIT, "1.0.0", "--building", "bench", "--replicas", "1", "--wait")
        times = []
        for round_ in range(1, args.rounds + 1):
            wait_for(cli, "INSTANCE_STATE_COLLECTED", 60)
            started = time.monotonic()
            status = get(port)
            took = time.monotonic() - started
            print(f"round {round_}: HTTP {status} after {took:.2f} s held")
            if status == 200:
                times.append(took)
        if times:
            ordered = sorted(times)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            print(f"cold start (request held -> answered), {len(times)} of {args.rounds} "
                  f"answered 200: median {statistics.median(times):.2f} s, p95 {p95:.2f} s, "
                  f"max {max(times):.2f} s (target p95 <= {TARGET_P95_S:g} s)")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
