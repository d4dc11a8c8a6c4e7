"""`landlord apply -f` on a real cluster under load, as a team keeps a unit file in version
control: the first apply publishes and deploys it, applying it again changes nothing, a
changed file (new version, new image, an env value, canary steps) rolls out by canary with
0 failed requests, `--dry-run` shows each plan and changes nothing, and a file that changes a
published version without bumping it is refused.

etcd, a coordinator and two real agents (Docker + HAProxy on 127.0.0.63-64).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("a1"): "127.0.0.63", host_id("a2"): "127.0.0.64"}
UNIT = "e2e/app"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 1.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        yield real


def unit_file(path: Path, version: str, port: int, extra_publish: str = "",
              deploy: str = "") -> Path:
    path.write_text(f"""
unit = "{UNIT}"
version = "{version}"

[publish]
image = "{demo_image(version)}"
port = 0
service_port = {port}
health_path = "/healthz"
health_interval = "1s"
cpu = "100m"
memory = "64Mi"
{extra_publish}

[deploy]
building = "demo"
replicas = 2
{deploy}
""")
    return path


def versions(cli: Cli) -> list[str]:
    result = cli.run("units", "versions", UNIT, "--output", "json")
    if result.returncode != 0:
        assert "NOT_FOUND" in result.stderr, result.stderr
        return []
    return sorted(v["version"] for v in json.loads(result.stdout)["versions"])


def stable(cli: Cli) -> Any:
    result = cli.run("units", "show", UNIT, "--output", "json")
    if result.returncode:
        return None
    return json.loads(result.stdout)["unit"].get("stable_version")


def test_apply_a_unit_file_then_a_changed_one(cluster: RealCluster, tmp_path: Path) -> None:
    cli = Cli(cluster.coordinator.address, cluster.cli_env())
    eventually(lambda: len([h for h in cli.json("hosts", "list")["hosts"]
                            if h["status"] == "alive"]) == 2, timeout=60, interval=0.5,
               message="both hosts alive")
    port = free_port_on_all(list(HOSTS.values()))
    first = unit_file(tmp_path / "app.toml", "1.0.0", port)

    planned = cli.json("apply", "-f", str(first), "--dry-run")
    assert (planned["publish"], planned["deploy"], planned["dry_run"]) == (True, True, True)
    assert planned["plan"] == ["publish e2e/app 1.0.0",
                               "deploy e2e/app 1.0.0: 2 instance(s) by blue-green"]
    assert versions(cli) == []  # the dry run changed nothing

    done = cli.run("apply", "-f", str(first), "--wait", timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    assert stable(cli) == "1.0.0"
    again = cli.json("apply", "-f", str(first))
    assert (again["publish"], again["deploy"]) == (False, False), again["plan"]
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")

    changed = unit_file(tmp_path / "app.toml", "1.1.0", port,
                        extra_publish='env = { GREETING = "hello" }',
                        deploy='strategy = "canary"\nsteps = [50, 100]\nmonitor = "3s"\n'
                               'step_delay = "1s"\nmin_requests = 5\nmax_error_rate = "5%"')
    planned = cli.run("apply", "-f", str(changed), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "publish e2e/app 1.1.0" in planned.stdout
    assert "env: {} -> {'GREETING': 'hello'}" in planned.stdout
    assert "deploy e2e/app 1.1.0: 2 instance(s) by canary, replacing 1.0.0" in planned.stdout
    assert "dry run: nothing was changed" in planned.stdout
    assert versions(cli) == ["1.0.0"] and stable(cli) == "1.0.0"

    load = Load(port, addresses=tuple(HOSTS.values())).start(max_seconds=200)
    try:
        start = load.settled()
        rolled = cli.run("apply", "-f", str(changed), "--wait", timeout=180)
        assert rolled.returncode == 0, (rolled.stdout[-2000:], rolled.stderr)
        assert stable(cli) == "1.1.0"
        load.settled()
        answers = load.since(start)
    finally:
        load.close()
    assert len(answers) > 50 and failed(answers) == [], failed(answers)[:5]
    assert {a.version for a in answers} >= {"1.0.0", "1.1.0"}

    # the same version with other content: refused, nothing published
    bad = unit_file(tmp_path / "bad.toml", "1.1.0", port,
                    extra_publish='env = { GREETING = "bye" }')
    refused = cli.run("apply", "-f", str(bad))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "versions are immutable" in refused.stderr
    assert versions(cli) == ["1.0.0", "1.1.0"]
