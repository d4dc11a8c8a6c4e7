"""A rolling upgrade from the previous release: its daemons, built from the git tag
``PREVIOUS`` (scripts/local_cluster/releases.py), next to this checkout's.

1. This coordinator with an agent of ``PREVIOUS``: the demo unit, published and deployed
   with this CLI, runs and serves; then the host's agent is upgraded (stopped, this
   release's started on the same data directory): it adopts the container, restarting
   none.
2. Agents upgrade first: this agent with a coordinator of ``PREVIOUS``, whose records the
   coordinator of this release then migrates when it takes over, while the instance runs on.

Each test has its own cluster (etcd, prefix, host id, loopback address, container labels).
A missing tag is a failure that says how to get it, never a skip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from local_cluster.daemons import BIN, AgentProcess
from local_cluster.load import http_get
from local_cluster.processes import free_port_on_all
from local_cluster.releases import previous_release

from common.schema import RECORD_SCHEMA, SCHEMA_FIELD
from coordinator.state.keys import KeyLayout
from coordinator.state.migrations import RECORDS
from tests.e2e.real_cluster import RealCluster
from tests.e2e.real_load import COORDINATOR_SETTINGS
from tests.integration.agent.agent_fixtures import ensure_demo_images
from tests.support import eventually

PREVIOUS = "v0.1.0"
UNIT = "compat/web"
LANDLORD = BIN / "landlord"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cluster() -> Iterator[RealCluster]:
    ensure_demo_images()
    # plain text: 0.1.0 has no TLS for etcd; this release is started with insecure = true
    real = RealCluster(COORDINATOR_SETTINGS, tls=False)
    try:
        yield real
    except BaseException:
        print(real.logs())
        raise
    finally:
        real.close()


def landlord(cluster: RealCluster, *args: str) -> Any:
    """This release's CLI against the cluster's leader; its JSON answer."""
    done = subprocess.run([str(LANDLORD), "--coordinator", cluster.leader().address, *args,
                           "--output", "json"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    try:
        return json.loads(done.stdout)
    except ValueError:  # --wait prints one JSON line per update: the last is the end
        return json.loads(done.stdout.splitlines()[-1])


def deploy_demo(cluster: RealCluster, agent: AgentProcess) -> tuple[int, str]:
    """Publish and deploy landlord/demo-app:1.0.0 on the agent's host; (service port, id
    of the running instance) once it serves."""
    eventually(lambda: alive(cluster, agent.host_id), timeout=60,
               message=f"{agent.host_id} registered")
    port = free_port_on_all([agent.address])
    landlord(cluster, "units", "publish", UNIT, "1.0.0", "--image", "landlord/demo-app:1.0.0",
             "--port", "0", "--service-port", str(port), "--health-path", "/healthz",
             "--health-interval", "1s", "--cpu", "100m", "--memory", "64Mi",
             "--feature", "first")
    info = landlord(cluster, "deploy", UNIT, "1.0.0", "--building", "demo", "--wait")
    assert info["phase"] == "promoted", info
    instance = eventually(lambda: running(cluster), timeout=60, message="instance running")
    eventually(lambda: http_get(agent.address, port, timeout=5)[0] == 200, timeout=60,
               message="the entry point serves")
    return port, instance


def alive(cluster: RealCluster, host_id: str) -> bool:
    hosts = {h["host_id"]: h for h in landlord(cluster, "hosts", "list")["hosts"]}
    return host_id in hosts and hosts[host_id]["status"] == "alive"


def running(cluster: RealCluster) -> str:
    found = landlord(cluster, "instances", "list", "--unit", UNIT)["instances"]
    live = [i["instance_id"] for i in found if i["state"] == "INSTANCE_STATE_RUNNING"]
    return live[0] if len(live) == 1 else ""


def containers(agent: AgentProcess) -> dict[str, tuple[str, int]]:
    """The host's containers: id -> (start time, restart count)."""
    client = docker.from_env()
    try:
        found = client.containers.list(filters={"label": [*agent.labels,
                                                           f"landlord.host={agent.host_id}"]})
        return {c.id: (c.attrs["State"]["StartedAt"], c.attrs["RestartCount"]) for c in found}
    finally:
        client.close()


def registrations(agent: AgentProcess) -> int:
    return agent.log_path.read_text(errors="replace").count("registered with coordinator")


def test_an_agent_of_the_previous_release_works_and_this_one_adopts_its_work(
        cluster: RealCluster) -> None:
    old_bin = previous_release(PREVIOUS)  # fails, saying how, when the tag is missing
    cluster.start(1)
    agent = cluster.add_agent("compat-old", "127.0.0.21", "demo", bin_dir=old_bin)
    port, instance = deploy_demo(cluster, agent)
    before = containers(agent)
    assert len(before) == 1, before
    sessions = registrations(agent)
    assert sessions >= 1

    assert agent.terminate() == 0  # the containers and HAProxy outlive it by design
    agent.bin_dir = BIN  # the upgrade: this release's agent on the same host and data
    agent.start()
    eventually(lambda: registrations(agent) > sessions, timeout=60,
               message="the new agent registered")
    assert agent.proc is not None and Path(str(agent.proc.args[0])).parent == BIN  # type: ignore[index]
    eventually(lambda: running(cluster) == instance, timeout=30, message="the same instance")
    assert http_get(agent.address, port, timeout=5)[0] == 200
    assert containers(agent) == before  # same id, same start, no restart: adopted


def stored_records(cluster: RealCluster) -> dict[str, dict[str, Any]]:
    """Every record of a versioned kind in the cluster's etcd, decoded."""
    layout = KeyLayout(cluster.prefix)
    return {key: json.loads(value) for key, value in cluster.etcd.dump(layout.root).items()
            if RECORDS.versioned(layout.kind_of(key)[0])}


def test_this_agent_works_with_a_coordinator_of_the_previous_release_and_its_successor(
        cluster: RealCluster) -> None:
    old_bin = previous_release(PREVIOUS)
    cluster.start(1, bin_dir=old_bin)
    agent = cluster.add_agent("compat-new", "127.0.0.22", "demo")
    port, instance = deploy_demo(cluster, agent)
    layout = KeyLayout(cluster.prefix)
    old_records = stored_records(cluster)
    kinds = {layout.kind_of(key)[0] for key in old_records}
    assert {"hosts", "units", "versions", "instances", "routes", "rollouts"} <= kinds
    assert not any(SCHEMA_FIELD in raw for raw in old_records.values())  # as 0.1.0 writes
    before = containers(agent)

    coordinator = cluster.coordinator  # the coordinators upgrade next: same address, etcd
    coordinator.stop()
    coordinator.bin_dir = BIN
    coordinator.start()
    eventually(lambda: cluster.etcd.dump(layout.schema), timeout=30,
               message="the cluster's schema recorded")
    migrated = stored_records(cluster)
    assert all(migrated[key][SCHEMA_FIELD] == RECORD_SCHEMA for key in old_records)
    for key, raw in old_records.items():
        kind = layout.kind_of(key)[0]
        if kind in ("units", "versions", "instances"):  # not rewritten for another reason
            assert RECORDS.migrate(kind, raw) == migrated[key], key
    eventually(lambda: registrations(agent) >= 2, timeout=60, message="the agent came back")
    eventually(lambda: running(cluster) == instance, timeout=30, message="the same instance")
    assert http_get(agent.address, port, timeout=5)[0] == 200
    assert containers(agent) == before
