"""A leak that fills its limit in under a minute is dumped and restarted before any OOM kill.

etcd, a coordinator and two real agents (Docker + HAProxy on 127.0.0.111-112, sampling
memory every 1.5 s). e2e/leaky runs the demo app with ``LEAK_MB_PER_MIN`` 84 under a 64Mi
limit, one instance per host, under load on both entry points: the plan's case (120 MB/min
under 256Mi sampled every 5 s) scaled to the same ratio (bench/fast_leak.py runs it at full
size). Each instance's ``memory_leak`` event comes before any ``oom_killed``, a memory dump
is written, the instance is restarted in a new container (``recovery.success``), and the
unit serves again; Docker saw no OOM kill of the unit's containers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import docker
import pytest
from local_cluster.images import demo_image
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import Load, real_cluster_cli, serving
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

HOSTS = {host_id("fl1"): "127.0.0.111", host_id("fl2"): "127.0.0.112"}
UNIT = "e2e/leaky"
SETTINGS = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
AGENT = {"monitor_interval": "1.5"}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    with real_cluster_cli(SETTINGS, HOSTS, agent_settings=AGENT) as (_, cli):
        yield cli


def events(cli: Cli, kind: str) -> list[dict[str, Any]]:
    result = cli.run("events", "--unit", UNIT, "--type", kind, "--output", "json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def per_instance(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``found`` once both instances have one (else empty: not yet)."""
    return found if len({e["instance_id"] for e in found}) == 2 else []


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def oom_killed(cli: Cli) -> list[dict[str, Any]]:
    crashed = events(cli, "instance.crashed") + events(cli, "limit_exceeded")
    return [e for e in crashed if str(e.get("details", {}).get("oom_killed")).lower() == "true"
            or e.get("details", {}).get("action") == "oom_killed"]


def test_a_fast_leak_is_dumped_and_restarted_before_any_oom_kill(cli: Cli) -> None:
    started = time.time()
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "200m", "--memory", "64Mi",
             "--env", "LEAK_MB_PER_MIN=84")
    deployed = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                       "--wait", "--output", "json", timeout=120)
    assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
    eventually(lambda: serving(port, HOSTS.values()), timeout=30, interval=0.5,
               message="both entry points serve")
    first = {i["instance_id"]: i["started_at"]
             for i in cli.json("instances", "list", "--unit", UNIT)["instances"]}
    assert len(first) == 2, first
    load = Load(port, HOSTS.values()).start(max_seconds=150)
    try:
        leaks: list[dict[str, Any]] = eventually(
            lambda: per_instance(events(cli, "memory_leak")), timeout=120, interval=1.0,
            message="a memory_leak event for each instance")
        recovered: list[dict[str, Any]] = eventually(
            lambda: per_instance([e for e in events(cli, "recovery.success")
                                  if e["details"].get("kind") == "memory_leak"]),
            timeout=60, interval=1.0, message="each instance restarted for its leak")
        eventually(lambda: serving(port, HOSTS.values()), timeout=30, interval=0.5,
                   message="both entry points serve after the restarts")
        after = load.settled(count=40)
        assert not failed(load.since(after)), failed(load.since(after))[:5]
    finally:
        load.close()
    first_leak: dict[str, dict[str, Any]] = {}
    for leak in leaks:
        first_leak.setdefault(leak["instance_id"], leak)
    for instance_id, leak in first_leak.items():
        assert "of the limit (high-water mark 85%)" in leak["details"]["reason"], leak
        assert float(leak["details"]["projected_s"]) <= 6 * 1.5, leak["details"]
        earlier = [e for e in oom_killed(cli) if e["instance_id"] == instance_id
                   and int(e["sequence"]) < int(leak["sequence"])]
        assert not earlier, earlier
    dumps = events(cli, "dump.memory")
    assert {d["instance_id"] for d in dumps} >= set(first), dumps
    now = {i["instance_id"]: i for i in cli.json("instances", "list", "--unit", UNIT)[
        "instances"]}
    for instance_id, started_at in first.items():
        assert now[instance_id]["state"] == "INSTANCE_STATE_RUNNING", now[instance_id]
        assert now[instance_id]["restarts"] >= 1, (started_at, now[instance_id])
    client = docker.from_env()
    try:
        ooms = client.events(since=int(started), until=int(time.time()) + 1, decode=True,
                             filters={"event": "oom", "label": "landlord.unit=leaky"})
        assert list(ooms) == []
    finally:
        client.close()
    answers = load.answers()
    print(f"leak -> restart under load: {len(answers)} answers, {len(failed(answers))} failed "
          f"(both instances leak at once); leak events after "
          f"{', '.join(f'{at(e) - started:.0f}' for e in first_leak.values())} s, "
          f"recovered: {len(recovered)}")
