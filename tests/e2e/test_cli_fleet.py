"""The `landlord` executable against two real coordinators, etcd and simulated agents.

Covers hosts, instances, events (history and --follow) and the client's leader following:
a write sent to a follower is retried on the leader named in its `x-leader` trailer, and
an address that does not answer is skipped for the next one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.daemons import CoordinatorProcess
from local_cluster.processes import free_port

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.cluster import Cluster
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    cluster = Cluster()
    try:
        cluster.start_etcd()
        cluster.add_coordinator()
        cluster.add_coordinator()
        cluster.leader()
        cluster.add_agent("host-a", "127.0.0.2", building="edge")
        cluster.add_agent("host-b", "127.0.0.3", building="core")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cli(cluster: Cluster) -> Cli:
    return Cli(",".join(c.address for c in cluster.coordinators), cluster.cli_env())


def follower_of(cluster: Cluster) -> CoordinatorProcess:
    leader = cluster.leader()
    return next(c for c in cluster.coordinators if c is not leader)


def test_hosts_list(cli: Cli) -> None:
    def both_hosts() -> dict[str, Any]:
        hosts = {h["host_id"]: h for h in cli.json("hosts", "list")["hosts"]}
        assert {"host-a", "host-b"} <= set(hosts)
        return hosts

    hosts = eventually(both_hosts, timeout=30, message="both agents registered")
    assert hosts["host-a"]["building"] == "edge"
    assert hosts["host-a"]["address"].startswith("127.0.0.2")
    assert hosts["host-b"]["building"] == "core"
    assert hosts["host-a"]["capacity"]["cpu_millis"] == 4000
    assert hosts["host-a"]["status"] == "alive"

    edge = cli.json("hosts", "list", "--building", "edge")["hosts"]
    assert [h["host_id"] for h in edge] == ["host-a"]

    table = cli.run("hosts", "list")
    assert table.returncode == 0, table.stderr
    assert "host-a" in table.stdout and "host-b" in table.stdout


def test_instances_list_is_empty_before_any_deploy(cli: Cli) -> None:
    assert cli.json("instances", "list") == {"instances": []}
    assert cli.json("instances", "list", "--host", "host-a", "--unit", "shop/none") == {
        "instances": []
    }


def test_a_first_deploy_shows_up_in_instances_list(cli: Cli) -> None:
    cli.json(
        "units",
        "publish",
        "fleet/web",
        "1.0.0",
        "--image",
        "demo:1",
        "--memory",
        "64Mi",
        "--feature",
        "x",
    )
    deployed = cli.json("deploy", "fleet/web", "1.0.0", "--building", "edge")
    assert deployed["rollout"]["to_version"] == "1.0.0"

    def running() -> list[dict[str, Any]]:
        found = cli.json("instances", "list", "--unit", "fleet/web")["instances"]
        return [i for i in found if i["state"] == "INSTANCE_STATE_RUNNING"]

    (instance,) = eventually(running, timeout=20, message="fleet/web running")
    assert (instance["host_id"], instance["version"]) == ("host-a", "1.0.0")
    on_b = cli.json("instances", "list", "--host", "host-b", "--unit", "fleet/web")
    assert on_b == {"instances": []}
    table = cli.run("instances", "list", "--host", "host-a")
    assert table.returncode == 0, table.stderr
    assert "fleet/web" in table.stdout and "running" in table.stdout


def test_gc_run(cli: Cli) -> None:
    eventually(lambda: len(cli.json("hosts", "list")["hosts"]) == 2, timeout=30)
    assert sorted(cli.json("gc", "run")["hosts"]) == ["host-a", "host-b"]
    assert cli.json("gc", "run", "--host", "host-b", "--kind", "unused")["hosts"] == ["host-b"]
    line = cli.fails(1, "gc", "run", "--host", "host-z")
    assert line.startswith("landlord: error: run gc: NOT_FOUND: ") and "host-z" in line


def test_events_history_as_json_lines(cli: Cli) -> None:
    cli.json("units", "publish", "ev/api", "1.0.0", "--image", "demo:1", "--feature", "x")

    def created() -> list[dict[str, Any]]:
        result = cli.run("events", "--unit", "ev/api", "--output", "json")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        return [e for e in events if e["type"] == "version.created"]

    events = eventually(created, timeout=15, message="version.created event")
    assert events[0]["apartment"] == "ev" and events[0]["unit"] == "api"
    assert events[0]["version"] == "1.0.0"
    assert events[0]["sequence"] > 0

    people = cli.run("events", "--unit", "ev/api")
    assert people.returncode == 0, people.stderr
    assert "version.created" in people.stdout and "ev/api@1.0.0" in people.stdout


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"no output within {timeout}s")


def test_events_follow_prints_new_events_as_they_happen(cli: Cli) -> None:
    proc = subprocess.Popen(
        [
            str(LANDLORD),
            "--coordinator",
            cli.addresses,
            "events",
            "--follow",
            "--unit",
            "live/api",
            "--output",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
        start_new_session=True,
    )
    try:
        # no race with the stream opening: history comes first, then live events
        cli.json("units", "publish", "live/api", "1.0.0", "--image", "demo:1", "--fix", "x")
        event = json.loads(read_line(proc, timeout=20))
        assert event["type"] == "version.created"
        assert (event["unit"], event["version"]) == ("api", "1.0.0")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_write_sent_to_a_follower_follows_the_leader(cluster: Cluster) -> None:
    coordinator = follower_of(cluster)
    # the follower itself refuses writes and names the leader in the x-leader trailer
    with cluster.admin(coordinator) as admin, pytest.raises(grpc.RpcError) as refused:
        spec = types_pb2.UnitSpec(apartment="lead", unit="direct", image="demo:1")
        admin.PublishVersion(admin_pb2.PublishVersionRequest(spec=spec, version="1.0.0"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailers = dict(refused.value.trailing_metadata() or ())
    assert trailers.get("x-leader") == cluster.leader().address

    follower = Cli(coordinator.address, cluster.cli_env())
    published = follower.json(
        "units", "publish", "lead/api", "1.0.0", "--image", "demo:1", "--feature", "x"
    )
    assert published["version"]["version"] == "1.0.0"
    # reads are answered by the follower itself
    assert follower.json("units", "show", "lead/api")["latest"]["version"] == "1.0.0"


def test_an_address_that_does_not_answer_is_skipped(cluster: Cluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cli = Cli(f"{dead},{follower_of(cluster).address}", cluster.cli_env())
    assert cli.json("leader")["leader_address"] == cluster.leader().address
    published = cli.json(
        "units", "publish", "skip/api", "1.0.0", "--image", "demo:1", "--feature", "x"
    )
    assert published["version"]["unit"] == "api"


def test_no_coordinator_answering_is_one_line_exit_1() -> None:
    cli = Cli(f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    line = cli.fails(1, "hosts", "list")
    assert line.startswith("landlord: error: list hosts: UNAVAILABLE: no coordinator answered")


def test_cordon_and_uncordon_a_host(cli: Cli) -> None:
    def row(host_id: str) -> str:
        table = cli.run("hosts", "list")
        assert table.returncode == 0, table.stderr
        assert "SCHEDULING" in table.stdout, table.stdout
        return next(line for line in table.stdout.splitlines() if line.startswith(host_id))

    eventually(lambda: row("host-b"), timeout=30, message="host-b registered")
    try:
        done = cli.run("hosts", "cordon", "host-b", "--reason", "disk swap")
        assert done.returncode == 0, done.stderr
        assert "host host-b cordoned (disk swap): no new instances" in done.stdout
        again = cli.run("hosts", "cordon", "host-b")
        assert "host host-b already cordoned (disk swap); nothing changed" in again.stdout
        assert "cordoned (disk swap)" in row("host-b")
        assert "open" in row("host-a")
        hosts = {h["host_id"]: h for h in cli.json("hosts", "list")["hosts"]}
        assert (hosts["host-b"]["cordoned"], hosts["host-b"]["cordon_reason"]) == \
            (True, "disk swap")
        assert hosts["host-a"]["cordoned"] is False
    finally:
        lifted = cli.run("hosts", "uncordon", "host-b")
    assert lifted.returncode == 0, lifted.stderr
    assert "host host-b uncordoned: new instances may be placed on it" in lifted.stdout
    assert "open" in row("host-b")
    line = cli.fails(1, "hosts", "uncordon", "host-z")
    assert "NOT_FOUND: host 'host-z' does not exist" in line, line
