"""`landlord instances logs|exec` on a real cluster: the CLI talks to the coordinator only;
output comes from the instance's host through its agent.

- logs of an instance on the other host, followed while requests reach it: their lines
  arrive as they happen, and Ctrl-C ends the follow at once;
- exec: stdout and stderr streamed apart, the command's exit code passed through, 124 for
  a command killed at its timeout, a clear one-line error for an unknown instance.

etcd, a coordinator and two real agents (Docker + HAProxy on 127.0.0.65-66).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from local_cluster.images import demo_image
from local_cluster.load import http_get
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("o1"): "127.0.0.65", host_id("o2"): "127.0.0.66"}
UNIT = "e2e/echo"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 1.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        yield real


def test_logs_and_exec_of_instances_on_any_host(cluster: RealCluster) -> None:
    cli = Cli(cluster.coordinator.address, cluster.cli_env())
    eventually(lambda: len([h for h in cli.json("hosts", "list")["hosts"]
                            if h["status"] == "alive"]) == 2, timeout=60, interval=0.5,
               message="both hosts alive")
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--cpu", "100m", "--memory", "64Mi", "--env", "LOG_REQUESTS=1")
    done = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                   "--wait", "--output", "json", timeout=120)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")
    instances = cli.json("instances", "list", "--unit", UNIT)["instances"]
    far = next(i for i in instances if i["host_id"] == host_id("o2"))
    address = f"{HOSTS[host_id('o2')]}"

    # follow the logs of the instance on o2 while requests reach it
    follow = subprocess.Popen(
        [str(LANDLORD), "--coordinator", cluster.coordinator.address, "instances", "logs",
         far["instance_id"], "--follow", "--since", "10m"],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        marker = f"/marker-{time.monotonic_ns()}"
        for _ in range(20):  # HAProxy spreads them: some reach the far instance
            http_get(address, port, path=marker, timeout=5)
        time.sleep(3.0)  # one report interval or two
        follow.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = follow.communicate(timeout=10)
        assert time.monotonic() - started < 5, "Ctrl-C ends a follow at once"
    finally:
        if follow.poll() is None:
            follow.kill()
    assert marker.encode() in out, (out[-2000:], err[-500:])  # logs: one stream, on stdout
    assert follow.returncode == 0, err[-500:]

    plain = cli.run("instances", "logs", far["instance_id"], "--tail", "5")
    assert plain.returncode == 0 and plain.stdout.count("\n") <= 5, plain.stderr

    ran = cli.run("instances", "exec", far["instance_id"], "--", "python3", "-c",
                  "import sys; print('to-out'); print('to-err', file=sys.stderr); sys.exit(7)")
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "to-out\n", "to-err\n")
    started = time.monotonic()
    killed = cli.run("instances", "exec", "--timeout", "1s", far["instance_id"], "--",
                     "python3", "-c", "import time; time.sleep(30)")
    assert killed.returncode == 124 and time.monotonic() - started < 10, killed.stderr
    missing = cli.run("instances", "exec", "no-such-instance", "--", "true")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert "NOT_FOUND" in missing.stderr and "no-such-instance does not exist" in missing.stderr
