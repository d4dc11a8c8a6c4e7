"""End to end with REAL agents: etcd, `landlord-coordinator` and three `landlord-agent`s.

Every process is started from its console script the way an operator would; the agents
advertise 127.0.0.2-4 (building "demo"), run real containers of landlord/demo-app on
Docker and their own HAProxy each. The tests run in file order on one deployment:

1. the hosts register with their capacity;
2. a unit published and deployed through the admin API (replicas 3) runs as three labelled
   containers, one per host, visible as running through ListInstances;
3. each host's entry point (127.0.0.X:service_port) spreads requests over the instances
   of all three hosts;
4. a container killed behind the agent's back is replaced by that agent while every
   request through the entry points keeps being answered;
5. `landlord gc run` with every kind runs on every host;
6. agents stopped with SIGTERM exit cleanly and leave containers and HAProxy serving
   (the cluster's close() then shuts them down and removes the containers by label).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from local_cluster.cluster import CLUSTER_LABEL
from local_cluster.load import http_get
from local_cluster.processes import free_port_on_all

from common.event_types import EventType
from common.gc_kinds import GcKind
from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import (
    HOSTS,
    list_hosts,
    list_instances,
    publish,
    real_cluster,
    unit_containers,
    unit_spec,
)
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

APARTMENT, UNIT, VERSION = "e2e", "web", "1.0.0"
RUNNING = types_pb2.INSTANCE_STATE_RUNNING

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with real_cluster() as real:
        yield real
    client = docker.from_env()
    leftovers = client.containers.list(
        all=True, filters={"label": [f"{CLUSTER_LABEL}={real.name}", f"landlord.unit={UNIT}"]})
    client.close()
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"
    assert not any(agent.haproxy.processes() for agent in real.agents), "haproxy left running"


@pytest.fixture(scope="module")
def service_port(cluster: RealCluster) -> int:
    """Publish and deploy e2e/web 1.0.0 (three replicas) once the hosts are registered."""
    eventually(lambda: all_hosts(cluster), timeout=60, message="three hosts registered")
    port = free_port_on_all(list(HOSTS.values()))
    spec = unit_spec(APARTMENT, UNIT, VERSION, port, cpu_millis=200, memory_bytes=96 << 20)
    with cluster.admin() as admin:
        publish(admin, spec, VERSION, types_pb2.ChangeSet(features=["first"]))
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version=VERSION,
                                             building="demo", replicas=3), timeout=30)
    return port


def instances(cluster: RealCluster) -> list[Any]:
    return list_instances(cluster, APARTMENT, UNIT)


def all_hosts(cluster: RealCluster) -> list[Any]:
    """The three hosts, once all are registered and alive (placement needs them alive)."""
    found = list_hosts(cluster)
    assert len(found) == 3 and all(h.status == "alive" for h in found), found
    return found


def running_instances(cluster: RealCluster) -> list[Any]:
    found = instances(cluster)
    assert len(found) == 3 and all(i.state == RUNNING for i in found), found
    return found


def get(address: str, port: int) -> dict[str, Any]:
    """GET / through a host's entry point; AssertionError unless it answers 200."""
    try:
        status, body = http_get(address, port, timeout=15)
    except OSError as exc:
        raise AssertionError(f"{address}:{port} did not answer: {exc!r}") from None
    if status != 200:
        raise AssertionError(f"{address}:{port} answered {status}: {body!r}")
    return dict(json.loads(body))


def test_hosts_register_with_capacity(cluster: RealCluster) -> None:
    found = eventually(lambda: all_hosts(cluster), timeout=60, message="three hosts registered")
    by_id = {h.host_id: h for h in found}
    assert {h: by_id[h].address for h in HOSTS} == HOSTS
    for host in found:
        assert host.building == "demo"
        assert host.capacity.cpu_millis > 0 and host.capacity.memory_bytes > 0
        assert host.capacity.storage_bytes > 0
        assert {"cpu", "memory", "network"} <= set(host.enforceable)  # bandwidth on
        assert host.agent_version


def test_deploy_runs_one_labelled_container_per_host(cluster: RealCluster,
                                                     service_port: int) -> None:
    found = eventually(lambda: running_instances(cluster), timeout=90,
                       message="three running instances")
    assert sorted(i.host_id for i in found) == sorted(HOSTS)
    for inst in found:
        assert inst.address == HOSTS[inst.host_id] and inst.port > 0
        assert inst.version == VERSION and inst.health_score >= 0.5
    running = unit_containers(UNIT)
    assert len(running) == 3
    by_instance = {c.labels["landlord.instance"]: c for c in running}
    assert set(by_instance) == {i.instance_id for i in found}
    for inst in found:
        labels = by_instance[inst.instance_id].labels
        assert labels["landlord.host"] == inst.host_id
        assert labels["landlord.apartment"] == APARTMENT and labels["landlord.version"] == VERSION


def _spread(address: str, port: int, expected: set[str]) -> bool:
    seen: dict[str, str] = {}
    for _ in range(30):
        body = get(address, port)
        seen[body["instance"]] = body["host"]
        if set(seen) == expected:
            break
    assert set(seen) == expected, (address, seen)
    assert set(seen.values()) == set(HOSTS), seen  # the demo reports its agent's host id
    return True


def test_every_entry_point_spreads_over_all_hosts(cluster: RealCluster,
                                                  service_port: int) -> None:
    expected = {i.instance_id for i in eventually(lambda: running_instances(cluster),
                                                  timeout=90)}
    for address in HOSTS.values():

        def spread(address: str = address) -> bool:
            return _spread(address, service_port, expected)

        eventually(spread, timeout=60, interval=0.5, message=f"{address} reaches every instance")


def test_killed_container_is_replaced_while_traffic_flows(cluster: RealCluster,
                                                          service_port: int) -> None:
    victim = next(i for i in eventually(lambda: running_instances(cluster), timeout=90)
                  if i.host_id == host_id("h2"))
    [container] = unit_containers(UNIT, **{"landlord.instance": victim.instance_id})
    container.kill()

    failures: list[str] = []
    sent = 0

    def replaced() -> bool:
        nonlocal sent
        for address in HOSTS.values():  # traffic keeps flowing through every entry point
            sent += 1
            try:
                get(address, service_port)
            except AssertionError as exc:
                failures.append(str(exc))
        now = {i.instance_id: i for i in instances(cluster)}
        inst = now.get(victim.instance_id)
        assert inst is not None and inst.state == RUNNING and inst.restarts >= 1, inst
        [fresh] = unit_containers(UNIT, **{"landlord.instance": victim.instance_id})
        assert fresh.id != container.id and fresh.labels["landlord.generation"] == "2"
        return True

    eventually(replaced, timeout=60, interval=0.2, message=f"{victim.instance_id} replaced")
    assert not failures and sent >= 3, failures
    expected = {i.instance_id for i in running_instances(cluster)}
    assert victim.instance_id in expected
    eventually(lambda: _spread(HOSTS[host_id("h1")], service_port, expected), timeout=60,
               interval=0.5, message="the replaced instance serves again")


def test_gc_of_every_kind_runs_on_every_host(cluster: RealCluster, service_port: int) -> None:
    """`landlord gc run --kind K` for every kind is sent to every host and runs there.

    Before GC kinds were defined once, the CLI and the coordinator accepted "unused" and
    every agent refused it: the refusal came back as a command.failed event."""
    eventually(lambda: running_instances(cluster), timeout=90)
    cli = Cli(cluster.coordinator.address, cluster.cli_env())
    for kind in GcKind:
        assert sorted(cli.json("gc", "run", "--kind", kind)["hosts"]) == sorted(HOSTS)
    # A negative check: the agents report results within a report interval (1 s); give
    # them several before reading the events.
    time.sleep(5)
    with cluster.admin() as admin:
        events = list(admin.StreamEvents(admin_pb2.StreamEventsRequest(), timeout=10))
    failures = [f"{e.host_id}: {e.message}" for e in events if e.type == EventType.GC_FAILED
                or (e.type == "command.failed" and e.message.startswith("gc:"))]
    assert failures == []
    assert len(running_instances(cluster)) == 3  # in use: not collected as unused


def test_agents_stop_cleanly_and_leave_traffic_serving(cluster: RealCluster,
                                                       service_port: int) -> None:
    eventually(lambda: running_instances(cluster), timeout=90)
    for agent in cluster.agents:
        assert agent.terminate() == 0, agent.log_tail()
    assert len(unit_containers(UNIT)) == 3  # containers belong to the engine, not to the agent
    for address in HOSTS.values():
        assert get(address, service_port)["version"] == VERSION  # HAProxy keeps serving
    for agent in cluster.agents:
        assert agent.haproxy.master_pid() is not None
