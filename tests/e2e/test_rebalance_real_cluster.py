"""A unit's spread evened out after a host returns, by itself and by `landlord units
rebalance`, on a real cluster under load.

etcd, a coordinator (rebalance_grace 6 s) and two real agents (Docker + HAProxy on
127.0.0.173-174). e2e/rebal runs two replicas, one per host. The second host is lost
(agent killed, containers removed, HAProxy stopped) and healing places its instance on the
first host; the host comes back empty. With a client on each entry point:

1. the automatic rebalance, after the grace, moves one instance back to the returned host;
2. the returned host is cordoned, the unit scaled to 4 (3 + 1), uncordoned, and
   `landlord units rebalance e2e/rebal` (before the grace runs out) moves one back (2 + 2).

Each ends evenly spread, and no request fails from the host's return to the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, failed, real_cluster_cli, serving
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

KEPT, RETURNING = host_id("rb-1"), host_id("rb-2")
HOSTS = {KEPT: "127.0.0.173", RETURNING: "127.0.0.174"}
UNIT = "e2e/rebal"
GRACE = 6.0
RUNNING = "INSTANCE_STATE_RUNNING"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ready() -> Iterator[tuple[RealCluster, Cli]]:
    settings = {"heartbeat_interval": 1.0, "liveness_grace": 4.0, "stop_grace": 2.0,
                "rebalance_grace": GRACE}
    with real_cluster_cli(settings, HOSTS) as found:
        yield found


def _statuses(cli: Cli) -> dict[str, str]:
    return {h["host_id"]: h["status"] for h in cli.json("hosts", "list")["hosts"]}


def _spread(cli: Cli, count: int) -> Counter[str]:
    """Instances per host, once ``count`` are placed and all are running."""
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    assert len(found) == count and all(i["state"] == RUNNING for i in found), found
    return Counter(i["host_id"] for i in found)


def _rebalance(cli: Cli) -> dict[str, Any]:
    status: dict[str, Any] = cli.json("units", "rebalance-status", UNIT)
    return status


def test_a_returned_host_gets_its_share_back_automatically_and_by_command(
        ready: tuple[RealCluster, Cli]) -> None:
    cluster, cli = ready
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi")
    deployed = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                       "--wait", "--output", "json", timeout=120)
    assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
    assert _spread(cli, 2) == {KEPT: 1, RETURNING: 1}

    # the host is lost: its instance is placed again on the other one
    dead = next(a for a in cluster.agents if a.host_id == RETURNING)
    dead.kill()
    dead.remove_containers()
    dead.shutdown_haproxy()
    eventually(lambda: _spread(cli, 2) == {KEPT: 2}, timeout=60, interval=0.5,
               message="the lost host's instance placed on the other host")
    dead.start()
    eventually(lambda: _statuses(cli)[RETURNING] == "alive", timeout=60, interval=0.5,
               message="the host is alive again")
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")

    load = Load(port, addresses=HOSTS.values()).start(max_seconds=200)
    try:
        start = load.settled()
        returned = time.monotonic()
        # 1. by itself, after the grace
        eventually(lambda: _rebalance(cli)["state"] == "done", timeout=GRACE + 60,
                   interval=0.5, message="the automatic rebalance done")
        automatic = _rebalance(cli)
        took_auto = time.monotonic() - returned
        assert automatic["reason"].startswith("automatic: spread uneven for"), automatic
        assert automatic["moved_count"] == 1, automatic
        assert _spread(cli, 2) == {KEPT: 1, RETURNING: 1}

        # 2. by the command: 3 + 1 made with the returned host cordoned, then evened out
        assert cli.run("hosts", "cordon", RETURNING).returncode == 0
        scaled = cli.run("units", "scale", UNIT, "4", timeout=60)
        assert scaled.returncode == 0, scaled.stderr
        eventually(lambda: _spread(cli, 4) == {KEPT: 3, RETURNING: 1}, timeout=60,
                   interval=0.5, message="3 + 1 after scaling with the host cordoned")
        assert cli.run("hosts", "uncordon", RETURNING).returncode == 0
        began = time.monotonic()
        asked = cli.run("units", "rebalance", UNIT, timeout=120)
        took_command = time.monotonic() - began
        assert asked.returncode == 0, (asked.stdout, asked.stderr)
        assert f"{KEPT} -> {RETURNING}" in asked.stdout, asked.stdout  # the plan named it
        final = _rebalance(cli)
        assert (final["state"], final["moved_count"]) == ("done", 1), final
        assert final["reason"] == "requested by an operator", final
        assert _spread(cli, 4) == {KEPT: 2, RETURNING: 2}

        settle = load.settled()
        answers = load.since(start)
        assert answers and not failed(answers), failed(answers)[:10]
        assert {a.host for a in load.since(settle)} == set(HOSTS.values())
    finally:
        load.close()
    print(f"rebalance after the host returned: automatic done {took_auto:.1f}s after the load "
          f"began (grace {GRACE:g}s), the command took {took_command:.1f}s; "
          f"{len(answers)} requests, {len(failed(answers))} failed")
