"""An escalated instance is re-placed once on the other host, then its version is marked failing.

etcd, a coordinator and two real agents (Docker + HAProxy on 127.0.0.161-162). e2e/crashy
runs the demo app with ``CRASH_AFTER_S``: every start of it crashes a few seconds later, on
any host. The agents give up after two incidents (``max_incidents`` 1) and escalate; the
coordinator re-places the instance once, on the other host (``instance.escalation_replaced``);
the replacement crashes and escalates too, so version 1.0.0 is marked failing for the unit
(``unit.version_failing``, ``units show`` says why, the unit is ``failed``) and nothing is
re-placed again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import COORDINATOR_SETTINGS, list_hosts, real_cluster
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("lk1"): "127.0.0.161", host_id("lk2"): "127.0.0.162"}
UNIT = "e2e/crashy"
AGENT = {"crash_max_retries": "1", "crash_delay": "0.2", "loop_backoff": "0.2",
         "max_incidents": "1", "healthy_reset": "600"}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    with real_cluster(settings=COORDINATOR_SETTINGS, hosts=HOSTS, agent_settings=AGENT) as real:
        eventually(lambda: {h.host_id for h in list_hosts(real) if h.status == "alive"}
                   == set(HOSTS), timeout=60, interval=0.5, message="both hosts alive")
        yield Cli(real.coordinator.address, real.cli_env())


def _events(cli: Cli, kind: str) -> list[dict[str, Any]]:
    result = cli.run("events", "--unit", UNIT, "--type", kind, "--output", "json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _instances(cli: Cli) -> list[dict[str, Any]]:
    return list(cli.json("instances", "list", "--unit", UNIT)["instances"])


def test_crash_looping_instance_is_replaced_once_then_its_version_marked_failing(
    cli: Cli,
) -> None:
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi",
             "--env", "CRASH_AFTER_S=8")
    began = time.monotonic()
    deployed = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "1",
                       "--wait", "--output", "json", timeout=120)
    assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
    [first] = _instances(cli)

    replaced = eventually(lambda: _events(cli, "instance.escalation_replaced"), timeout=90,
                          interval=1.0, message="the escalated instance re-placed")
    assert len(replaced) == 1 and replaced[0]["instance_id"] == first["instance_id"]
    details = replaced[0]["details"]
    assert details["from_host"] == first["host_id"]
    assert details["to_host"] != first["host_id"] and details["to_host"] in HOSTS
    assert "escalated on" in replaced[0]["message"]

    failing = eventually(lambda: _events(cli, "unit.version_failing"), timeout=90,
                         interval=1.0, message="the version marked failing")
    took = time.monotonic() - began
    assert failing[0]["instance_id"] == details["replacement"]
    assert "not re-placed again" in failing[0]["message"]
    shown = cli.json("units", "show", UNIT)["unit"]
    assert shown["state"] == "failed", shown
    assert "escalated again after it was re-placed" in shown["failing_versions"]["1.0.0"]
    text = cli.run("units", "show", UNIT)
    assert "failing 1.0.0" in text.stdout, text.stdout

    time.sleep(6)  # several leader rounds: still exactly one re-placement
    assert len(_events(cli, "instance.escalation_replaced")) == 1
    [left] = _instances(cli)
    assert left["instance_id"] == details["replacement"]
    assert left["host_id"] == details["to_host"]
    print(f"deploy -> version marked failing: {took:.1f}s")
