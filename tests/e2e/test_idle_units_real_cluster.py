"""Idle units collected and woken on a real cluster (issue 17): etcd, a coordinator checking
idle units every second, two real agents with Docker and HAProxy on 127.0.0.181-182.

e2e/sleepy (snapshot state: the demo app's request counter in /state) has a 6 s idle timeout
and one instance. Requests through the OTHER host's entry point keep it up past its timeout
(the leader merges every host's windows). Once nobody calls it, its only instance is
collected (state `collected` in `instances list`, container gone) and stays so past the
coordinator's converge period. `landlord units wake` brings it back on the same host with its
counter restored. Collected again, it is woken by a plain request to an entry point, which
is held and answered; the cold start is printed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.load import http_get

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import free_ports, real_cluster_cli, serving, unit_containers
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

HOSTS = {host_id("id-1"): "127.0.0.181", host_id("id-2"): "127.0.0.182"}
ADDRESSES = tuple(HOSTS.values())
UNIT, IDLE_S = "e2e/sleepy", 6.0
SETTINGS = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0,
            "idle_check_interval": 1.0}

pytestmark = pytest.mark.timeout(240)


AGENT_METRICS: dict[str, str] = {}
"""Entry address -> that host's agent metrics address."""


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    with real_cluster_cli(SETTINGS, HOSTS) as (real, cli):
        AGENT_METRICS.update({HOSTS[a.host_id]: a.metrics_address for a in real.agents})
        yield cli


def wakes_sent(address: str) -> float:
    """landlord_agent_wakes_sent_total of the agent behind entry ``address``."""
    host, _, port = AGENT_METRICS[address].partition(":")
    status, body = http_get(host, int(port), "/metrics", timeout=10)
    assert status == 200, status
    found = re.search(r"^landlord_agent_wakes_sent_total (\S+)$", body.decode(), re.MULTILINE)
    assert found is not None, body[:500]
    return float(found.group(1))


def instance(cli: Cli) -> dict[str, Any]:
    [found] = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return found  # type: ignore[no-any-return]


def in_state(cli: Cli, state: str) -> bool:
    found = instance(cli)
    assert found["state"] == f"INSTANCE_STATE_{state.upper()}", found
    return True


def counter(address: str, port: int) -> int:
    status, body = http_get(address, port, "/state", timeout=40)
    assert status == 200, (status, body)
    return int(json.loads(body)["count"])


def test_idle_unit_collected_not_restarted_and_woken(cli: Cli) -> None:
    [port] = free_ports(1)
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi",
             "--state-mode", "snapshot", "--env", "STATE_DIR=/state",
             "--idle-timeout", f"{IDLE_S:g}s")
    done = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "1", "--wait",
                   "--output", "json", timeout=120)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    eventually(partial(serving, port, ADDRESSES), timeout=60, interval=0.5,
               message="entry points serve")
    placed = instance(cli)
    far = next(a for h, a in HOSTS.items() if h != placed["host_id"])

    # requests through the other host's entry point only, for twice the timeout: kept up
    until = time.monotonic() + 2 * IDLE_S
    sent = 0
    while time.monotonic() < until:
        answer = http_get(far, port, "/", timeout=5)
        assert answer[0] == 200, (answer, instance(cli), cli.run("events", "--unit", UNIT).stdout)
        sent += 1
        time.sleep(0.5)
    assert in_state(cli, "running")
    before = counter(far, port)
    assert before >= sent

    # nobody calls: collected, container gone, and it stays so (converge runs every tick)
    # (the leader's mark shows at once; the host confirms once the container is gone)
    eventually(lambda: in_state(cli, "collected") and unit_containers("sleepy") == [],
               timeout=IDLE_S + 30, interval=0.5,
               message="the idle unit's only instance collected, its container gone")
    events = cli.run("events", "--unit", UNIT, "--output", "json")
    assert '"unit.collected"' in events.stdout, events
    time.sleep(8)  # past converge's resend period (3 heartbeats): nothing started it again
    assert in_state(cli, "collected") and unit_containers("sleepy") == []

    # landlord units wake: the same instance on the same host, its counter restored
    woken = cli.json("units", "wake", UNIT)
    assert woken["changed"] and woken["started"] == [placed["instance_id"]], woken
    eventually(lambda: in_state(cli, "running"), timeout=60, interval=0.5,
               message="woken instance running")
    assert instance(cli)["host_id"] == placed["host_id"]
    eventually(partial(serving, port, ADDRESSES), timeout=30, interval=0.5,
               message="entry points serve again")
    assert counter(far, port) >= before
    assert cli.json("units", "wake", UNIT)["changed"] is False  # awake already

    # collected again; a plain request to an entry point wakes it, held until answered
    eventually(lambda: in_state(cli, "collected"), timeout=IDLE_S + 25, interval=0.5,
               message="collected again")
    assert wakes_sent(far) == 0
    started = time.monotonic()
    status, body = http_get(far, port, "/state", timeout=40)
    cold = time.monotonic() - started
    assert status == 200, (status, body)
    restored = int(json.loads(body)["count"])
    print(f"cold start through {far}: request held {cold:.2f} s until answered")
    assert restored >= before  # the counter came back from the backup
    assert in_state(cli, "running")
    woken = cli.run("events", "--unit", UNIT, "--type", "unit.woken", "--output", "json")
    assert "request on" in woken.stdout, woken
    assert wakes_sent(far) >= 1  # the held request asked for the wake (and is counted)
    counter_after_wake = counter(far, port)
    assert counter_after_wake >= restored

