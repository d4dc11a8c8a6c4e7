"""Back up and restore a real cluster under load with the CLI: `landlord cluster snapshot
save`, then the coordinator and etcd are lost (etcd's data removed), a fresh etcd gets
`landlord cluster snapshot restore` with the coordinator's config, and the coordinator starts
again: the same containers still run (none restarted), the cluster answers as before, and
not one request failed throughout. A second restore onto the now-used etcd is refused.

etcd, a coordinator and two real agents (Docker + HAProxy on 127.0.0.61-62); e2e/backup 1.0.0
runs two replicas behind every host's entry point.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, real_cluster, serving, unit_containers
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("b1"): "127.0.0.61", host_id("b2"): "127.0.0.62"}
UNIT = "e2e/backup"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 1.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        yield real


def _alive(cli: Cli) -> bool:
    hosts = cli.json("hosts", "list")["hosts"]
    return sorted(h["host_id"] for h in hosts if h["status"] == "alive") == sorted(HOSTS)


def _running(cli: Cli) -> list[tuple[str, str, str]]:
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return sorted((i["instance_id"], i["host_id"], i["version"]) for i in found
                  if i["state"] == "INSTANCE_STATE_RUNNING")


def _containers() -> dict[str, str]:
    """Container id -> when Docker last started it."""
    return {c.id: c.attrs["State"]["StartedAt"]
            for c in unit_containers(UNIT.split("/")[1], **{"landlord.apartment": "e2e"})}


def test_a_snapshot_restored_onto_a_fresh_etcd_keeps_the_workloads(
        cluster: RealCluster, tmp_path: Path) -> None:
    cli = Cli(cluster.coordinator.address, cluster.cli_env())
    eventually(lambda: _alive(cli), timeout=60, interval=0.5, message="both hosts alive")
    port = free_port_on_all(list(HOSTS.values()))
    cli.json("units", "publish", UNIT, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--cpu", "100m", "--memory", "64Mi", "--secret-env", "TOKEN=s3cret")
    deployed = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                       "--wait", "--output", "json", timeout=120)
    assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")
    running, containers = _running(cli), _containers()
    assert len(running) == 2 and len(containers) == 2
    units_before = _units(cli)

    load = Load(port, addresses=tuple(HOSTS.values())).start(max_seconds=200)
    try:
        start = load.settled()
        backup = tmp_path / "cluster.snapshot"
        saved = cli.json("cluster", "snapshot", "save", str(backup))
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert saved["keys"] > 0 and saved["kinds"]["instances"] == 2
        assert saved["kinds"]["hosts"] == 2 and "leader" not in saved["kinds"]
        again = cli.run("cluster", "snapshot", "save", str(backup))
        assert again.returncode == 2 and "pass --force" in again.stderr

        # the control plane is lost: the coordinator stops, etcd's data is gone
        config = cluster.coordinator.config_path
        cluster.coordinator.stop()
        cluster.etcd.stop()
        cluster.start_etcd()  # an empty etcd on the same address and certificates
        restored = cli.json("cluster", "snapshot", "restore", str(backup),
                            "--coordinator-config", str(config))
        assert (restored["keys"], restored["resumed"]) == (saved["keys"], False)
        refused = cli.run("cluster", "snapshot", "restore", str(backup),
                          "--coordinator-config", str(config))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "a snapshot is restored only onto an empty prefix" in refused.stderr

        cluster.coordinator.start()
        eventually(lambda: _alive(cli), timeout=60, interval=0.5, message="hosts back")
        eventually(lambda: _running(cli) == running, timeout=30, interval=0.5,
                   message="the same instances running")
        assert _units(cli) == units_before
        assert _containers() == containers  # none restarted, none added
        load.settled()
        answers = load.since(start)
    finally:
        load.close()
    assert len(answers) > 100
    assert failed(answers) == [], failed(answers)[:5]
    # the restored secret is served as a secret: never its value
    version = cli.json("units", "versions", UNIT)["versions"][0]
    assert "s3cret" not in json.dumps(version)


def _units(cli: Cli) -> list[Any]:
    return [(u["apartment"], u["unit"], u.get("stable_version"), u.get("replicas"))
            for u in cli.json("units", "list")["units"]]
