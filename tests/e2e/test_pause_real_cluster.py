"""`landlord instances pause|resume` and `landlord units pause|resume` on a real cluster under
load (etcd, a coordinator, two real agents with Docker and HAProxy on 127.0.0.151-152, a
client per host entry point), e2e/pz running two replicas of the demo app:

- one instance paused: the clients see 0 failed requests (it drains from every host's route
  first); its container is frozen (Docker "paused"); resumed: the same process (PID and start
  time) with its in-memory request counter where it was, serving again;
- a deploy while an instance is paused is refused, naming it;
- the whole unit paused: its entry points answer 503 with Retry-After at once (no request is
  held); resumed: every client is served again, 200 only.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from functools import partial

import docker
import pytest
from local_cluster.images import demo_image
from local_cluster.load import http_get

from tests.e2e.real_cluster import OWNER, TEST_LABEL, host_id
from tests.e2e.real_load import Load, failed, free_ports, real_cluster_cli, serving
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

HOSTS = {host_id("pz1"): "127.0.0.151", host_id("pz2"): "127.0.0.152"}
ADDRESSES = tuple(HOSTS.values())
UNIT = "e2e/pz"
RETRY_AFTER = "10"  # coordinator/fleet/routes.py: PAUSED_RETRY_AFTER_S

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster_cli(settings, HOSTS) as (_, found):
        yield found


def instances(cli: Cli) -> dict[str, dict[str, object]]:
    return {i["instance_id"]: i for i in cli.json("instances", "list", "--unit", UNIT)[
        "instances"]}


def states(cli: Cli, wanted: dict[str, str]) -> bool:
    found = {iid: str(i["state"]) for iid, i in instances(cli).items()}
    assert found == wanted, found
    return True


def container(instance_id: str) -> tuple[str, int, str]:
    """(Docker status, PID, start time) of the instance's container."""
    client = docker.from_env()
    try:
        found = client.api.containers(all=True, filters={"label": [
            TEST_LABEL, OWNER, f"landlord.instance={instance_id}"]})
        assert len(found) == 1, found
        state = client.api.inspect_container(found[0]["Id"])["State"]
        return state["Status"], state["Pid"], state["StartedAt"]
    finally:
        client.close()


def counter(instance: dict[str, object]) -> int:
    """The instance's in-memory request counter, asked directly (GET /state counts nothing)."""
    status, body = http_get(str(instance["address"]), int(str(instance["port"])), "/state")
    assert status == 200, body
    return int(json.loads(body)["count"])


def entry_503(address: str, port: int) -> tuple[int, str | None, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        return reply.status, reply.getheader("Retry-After"), time.monotonic() - started
    finally:
        conn.close()


def says_retry_after(address: str, port: int) -> bool:
    status, retry_after, _ = entry_503(address, port)
    assert (status, retry_after) == (503, RETRY_AFTER), (status, retry_after)
    return True


RUN, PAUSE = "INSTANCE_STATE_RUNNING", "INSTANCE_STATE_PAUSED"


def test_pause_and_resume_under_load(cli: Cli) -> None:
    (port,) = free_ports(1)
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi")
    done = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2", "--wait",
                   "--output", "json", timeout=120)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    eventually(partial(serving, port, ADDRESSES), timeout=60, interval=0.5,
               message="entry points serve")
    first, second = sorted(instances(cli))
    eventually(partial(states, cli, {first: RUN, second: RUN}), timeout=30, interval=0.5,
               message="both instances running")
    load = Load(port, addresses=ADDRESSES).start(max_seconds=200)
    try:
        start = load.settled()
        before = counter(instances(cli)[first])
        process = container(first)

        # -- one instance: drained from every route, frozen; the other serves everything --
        paused = cli.json("instances", "pause", first)
        assert (paused["changed"], paused["instances"], paused["paused"]) == (
            True, [first], [first]), paused
        assert cli.json("instances", "pause", first)["changed"] is False  # idempotent
        eventually(partial(states, cli, {first: PAUSE, second: RUN}), timeout=20,
                   interval=0.5, message=f"{first} paused")
        assert container(first)[0] == "paused"
        assert "running (1 of 2 paused)" in cli.run("units", "list").stdout
        load.settled(count=100)  # a while on the other instance alone
        refused = cli.fails(1, "deploy", UNIT, "1.0.0", "--building", "demo")
        assert f"instances are paused ({first})" in refused, refused
        resumed = cli.json("instances", "resume", first)
        assert (resumed["changed"], resumed["paused"]) == (True, []), resumed
        assert cli.json("instances", "resume", first)["changed"] is False  # not paused: no-op
        eventually(partial(states, cli, {first: RUN, second: RUN}), timeout=20,
                   interval=0.5, message=f"{first} running again")
        assert container(first) == ("running", *process[1:])  # the same process
        assert counter(instances(cli)[first]) >= before  # its memory kept counting on
        load.settled(count=100)
        one = load.since(start)
        print(f"pause/resume of one instance: {len(one)} requests, {len(failed(one))} failed")
        assert failed(one) == [], failed(one)[:5]

        # -- the whole unit: 503 with Retry-After at once, nothing held -------------------
        whole = cli.json("units", "pause", UNIT)
        assert sorted(whole["paused"]) == [first, second], whole
        for address in ADDRESSES:
            eventually(partial(says_retry_after, address, port), timeout=20, interval=0.2,
                       message=f"503 with Retry-After on {address}")
        eventually(partial(states, cli, {first: PAUSE, second: PAUSE}), timeout=20,
                   interval=0.5, message="both paused")
        assert "running (paused)" in cli.run("units", "show", UNIT).stdout
        quiet = time.monotonic()
        load.settled(count=100)
        refused_fast = [a for a in load.since(quiet) if a.status == 503]
        assert refused_fast and all(a.status == 503 for a in load.since(quiet)), {
            a.status for a in load.since(quiet)}
        slowest = max(a.latency for a in refused_fast)
        print(f"whole unit paused: {len(refused_fast)} answers, all 503, slowest "
              f"{slowest * 1000:.0f} ms (a loaded 2-core machine)")
        assert slowest < 1.0  # answered at once, never held
        cli.json("units", "resume", UNIT)
        eventually(partial(serving, port, ADDRESSES), timeout=30, interval=0.5,
                   message="served again after resume")
        back = load.settled(count=100)
        assert failed(load.since(back)) == [], failed(load.since(back))[:5]
    finally:
        load.close()
    assert container(first)[1:] == process[1:] and container(second)[0] == "running"
