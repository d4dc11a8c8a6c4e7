"""`landlord hosts cordon`, `drain` and `decommission` on a real cluster under load.

etcd, a coordinator, two real agents (Docker + HAProxy on 127.0.0.71-72) and a client per
host entry point. e2e/drainme runs two replicas, both on the first host; that host is
cordoned, then drained with the CLI following the drain: its instances move to the other
host one at a time with zero failed requests on either entry point (the drained host's
HAProxy keeps serving, routing to the new instances), then the host is decommissioned and
leaves `hosts list`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import Load, failed, real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

DRAINED, KEPT = host_id("dr1"), host_id("dr2")
HOSTS = {DRAINED: "127.0.0.71", KEPT: "127.0.0.72"}
UNIT = "e2e/drainme"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        cli = Cli(real.coordinator.address, real.cli_env())

        def all_alive() -> bool:
            hosts = cli.json("hosts", "list")["hosts"]
            return len([h for h in hosts if h["status"] == "alive"]) == len(HOSTS)

        eventually(all_alive, timeout=60, interval=0.5, message="both hosts alive")
        yield cli


def _instances(cli: Cli) -> list[tuple[str, str]]:
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return sorted((i["host_id"], i["state"]) for i in found)


def test_drain_under_load_moves_everything_then_decommission(cli: Cli) -> None:
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi")
    # both replicas on the host to drain: the unit lives only there until the drain moves it
    assert cli.run("hosts", "cordon", KEPT).returncode == 0
    deployed = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                       "--wait", "--output", "json", timeout=120)
    assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
    assert cli.run("hosts", "uncordon", KEPT).returncode == 0
    running = "INSTANCE_STATE_RUNNING"
    assert _instances(cli) == [(DRAINED, running), (DRAINED, running)]
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")

    load = Load(port, addresses=HOSTS.values()).start(max_seconds=150)
    try:
        start = load.settled()
        cordoned = cli.run("hosts", "cordon", DRAINED, "--reason", "e2e drain")
        assert cordoned.returncode == 0, cordoned.stderr
        began = time.monotonic()
        drained = cli.run("hosts", "drain", DRAINED, "--deadline", "2m", timeout=150)
        took = time.monotonic() - began
        assert drained.returncode == 0, (drained.stdout, drained.stderr)
        assert f"-> {KEPT}" in drained.stdout  # the plan named where it goes
        assert f"host {DRAINED}: drained, 2 moved" in drained.stdout, drained.stdout
        settle = load.settled()
        answers = load.since(start)
        assert answers and not failed(answers), failed(answers)[:10]
        assert {a.host for a in load.since(settle)} == set(HOSTS.values())
        print(f"drain took {took:.1f}s; {len(answers)} requests, {len(failed(answers))} failed")
    finally:
        load.close()

    assert _instances(cli) == [(KEPT, running), (KEPT, running)]
    status = cli.json("hosts", "drain-status", DRAINED)
    assert (status["state"], status["moved_count"]) == ("drained", 2), status
    done = cli.json("hosts", "decommission", DRAINED)
    assert done["host_id"] == DRAINED
    assert DRAINED not in {h["host_id"] for h in cli.json("hosts", "list")["hosts"]}
    refused = cli.fails(1, "hosts", "decommission", KEPT)
    assert "not cordoned" in refused or "still placed" in refused, refused
