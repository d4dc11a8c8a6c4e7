"""`landlord units scale/stop/delete` on a real cluster under load (etcd, a coordinator, two
real agents with Docker and HAProxy on 127.0.0.61-62, a client per host entry point).

- e2e/api scales 1 -> 3 -> 1 while its clients see 0 failed requests;
- e2e/db is stopped while e2e/api's clients see 0 failed requests; db's entry point then
  answers 503 on every host (as README.md documents);
- deleting e2e/db is refused, naming it, while e2e/front (which depends on db) runs; once
  front is stopped, db is deleted and its entry point closes.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from local_cluster.images import demo_image
from local_cluster.load import http_get

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import Load, failed, free_ports, real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("u1"): "127.0.0.61", host_id("u2"): "127.0.0.62"}
ADDRESSES = tuple(HOSTS.values())

pytestmark = pytest.mark.timeout(300)


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


def publish_and_deploy(cli: Cli, unit: str, port: int, *deps: str) -> None:
    cli.json("units", "publish", unit, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi",
             *(arg for dep in deps for arg in ("--dep", dep)))
    done = cli.run("deploy", unit, "1.0.0", "--building", "demo", "--replicas", "1", "--wait",
                   "--output", "json", timeout=120)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)


def running(cli: Cli, unit: str, count: int) -> bool:
    """Exactly ``count`` instances of ``unit``, all running and healthy."""
    found = cli.json("instances", "list", "--unit", unit)["instances"]
    states = [(i["state"], i.get("health_score", 0)) for i in found]
    assert len(found) == count and all(
        s == "INSTANCE_STATE_RUNNING" and h >= 0.5 for s, h in states), states
    return True


def test_scale_stop_and_delete_under_load(cli: Cli) -> None:
    api, db, front = free_ports(3)
    publish_and_deploy(cli, "e2e/api", api)
    publish_and_deploy(cli, "e2e/db", db)
    for port in (api, db):
        eventually(partial(serving, port, ADDRESSES), timeout=60, interval=0.5,
                   message="entry points serve")
    load = Load(api, addresses=ADDRESSES).start(max_seconds=240)
    try:
        start = load.settled()
        up = cli.json("units", "scale", "e2e/api", "3")
        assert up["changed"] and len(up["started"]) == 2, up
        eventually(lambda: running(cli, "e2e/api", 3), timeout=60, interval=0.5,
                   message="3 instances of e2e/api running")
        load.settled()  # load across the three instances for a while
        down = cli.json("units", "scale", "e2e/api", "1")
        assert down["changed"] and len(down["stopped"]) == 2, down
        eventually(lambda: running(cli, "e2e/api", 1), timeout=60, interval=0.5,
                   message="1 instance of e2e/api left")
        settled_after_scale = load.settled()
        scaled = load.since(start)
        print(f"scale 1 -> 3 -> 1: {len(scaled)} requests, {len(failed(scaled))} failed")
        assert failed(scaled) == [], failed(scaled)[:5]

        stop = cli.json("units", "stop", "e2e/db")
        assert (stop["changed"], stop["unit"]["state"], len(stop["stopped"])) == (
            True, "stopped", 1), stop
        assert cli.json("units", "stop", "e2e/db")["changed"] is False  # idempotent
        eventually(lambda: not cli.json("instances", "list", "--unit", "e2e/db")["instances"],
                   timeout=30, interval=0.5, message="db's instances gone")
        for address in ADDRESSES:  # the stopped unit's entry point answers 503
            eventually(partial(_answers, address, db, 503), timeout=20, interval=0.5,
                       message=f"503 from db's entry point on {address}")
        load.settled()
        during_stop = load.since(settled_after_scale)
        print(f"stop e2e/db: e2e/api clients sent {len(during_stop)} requests, "
              f"{len(failed(during_stop))} failed")
        assert failed(during_stop) == [], failed(during_stop)[:5]
    finally:
        load.close()
    versions = cli.json("units", "versions", "e2e/db")["versions"]
    assert [v["version"] for v in versions] == ["1.0.0"]  # kept

    # deleting db is refused while front, which depends on it, runs
    again = cli.run("deploy", "e2e/db", "1.0.0", "--building", "demo", "--wait", timeout=120)
    assert again.returncode == 0, (again.stdout[-2000:], again.stderr)  # a stopped unit starts
    publish_and_deploy(cli, "e2e/front", front, "e2e/db@^1.0.0")
    cli.json("units", "stop", "e2e/db")
    error = cli.fails(1, "units", "delete", "e2e/db")
    assert "running units depend on it: e2e/front" in error, error
    cli.json("units", "stop", "e2e/front")
    for unit in ("e2e/front", "e2e/db"):
        assert cli.json("units", "delete", unit)["changed"] is True
    names = {u["unit"] for u in cli.json("units", "list", "--apartment", "e2e")["units"]}
    assert names == {"api"}, names

    def closed(address: str) -> bool:
        try:
            http_get(address, db, timeout=2)
        except OSError:
            return True
        return False

    for address in ADDRESSES:  # a deleted unit's entry point no longer listens
        eventually(partial(closed, address), timeout=20, interval=0.5,
                   message=f"db's entry point closed on {address}")



def _answers(address: str, port: int, status: int) -> bool:
    found, _ = http_get(address, port, timeout=5)
    assert found == status, (address, port, found)
    return True
