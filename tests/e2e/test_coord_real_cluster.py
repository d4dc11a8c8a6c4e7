"""Coordinator failures with REAL agents: etcd, two `landlord-coordinator`s, three agents.

The agents advertise 127.0.0.2-4 (building "demo") and run landlord/demo-app containers
behind their own HAProxy. Durations are printed, not judged. Timings are short (heartbeat
2 s, grace 12 s, lease 3 s); the grace is not shorter because a new leader gives each host
1.5 heartbeats + grace to reconnect, and an agent may take ~10 s after a takeover to find it
(its reconnect backoff reaches 5 s and it alternates with the dead coordinator). In file
order, on one deployment of e2e/web 1.0.0 with three replicas:

1. the hosts register with their capacity, the replicas are spread one per host, and every
   host's entry point reaches all three;
2. a host dies (agent SIGKILLed, its containers and HAProxy gone): its instance is placed
   again on a live host, the remaining data planes route only to live instances; the host
   comes back and is reconciled (exactly three instances running, no duplicate);
3. the leader coordinator is SIGKILLed: the follower leads, the agents register with it,
   and every instance, container and data plane is the same as before;
4. etcd is down for 30 s: containers and data planes are untouched and the entry points
   answer every request; after etcd returns the hosts are alive and a new deployment runs.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from google.protobuf import duration_pb2
from local_cluster.daemons import AgentProcess
from local_cluster.images import demo_image
from local_cluster.load import get_json
from local_cluster.processes import free_port_on_all

from agent.dataplane import HaproxyPaths
from agent.dataplane.haproxy_output import parse_servers_state
from agent.dataplane.haproxy_runtime import AdminSocket
from agent.dataplane.model import ServerState
from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import OWNER, RealCluster, host_id
from tests.e2e.real_load import Load, real_cluster
from tests.support import eventually

HOSTS = {host_id("h1"): "127.0.0.2", host_id("h2"): "127.0.0.3", host_id("h3"): "127.0.0.4"}
APARTMENT, UNIT, LATER_UNIT, VERSION = "e2e", "web", "api", "1.0.0"
HEARTBEAT, GRACE, LEASE = 2.0, 12.0, 3
SETTINGS = {"heartbeat_interval": HEARTBEAT, "liveness_grace": GRACE,
            "leader_lease_ttl": LEASE, "stop_grace": 3.0}
OUTAGE = 30.0
ONE_SECOND = duration_pb2.Duration(seconds=1)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with real_cluster(coordinators=2, settings=SETTINGS, hosts=HOSTS) as real:
        yield real
    assert not containers(running_only=False), "containers left behind"
    assert not any(agent.haproxy.processes() for agent in real.agents), "haproxy left running"


@pytest.fixture(scope="module")
def service_port(cluster: RealCluster) -> int:
    """e2e/web 1.0.0 published and deployed with three replicas once the hosts are alive."""
    eventually(lambda: alive_hosts(cluster), timeout=60, message="three hosts alive")
    port = free_port_on_all(list(HOSTS.values()))
    publish_and_deploy(cluster, UNIT, port)
    return port


def publish_and_deploy(cluster: RealCluster, unit: str, port: int) -> None:
    spec = types_pb2.UnitSpec(
        apartment=APARTMENT, unit=unit, image=demo_image(VERSION), port=0,
        service_port=port,
        health=types_pb2.HealthCheck(path="/healthz", interval=ONE_SECOND, timeout=ONE_SECOND,
                                     healthy_threshold=1, unhealthy_threshold=2),
        resources=types_pb2.Resources(cpu_millis=200, memory_bytes=96 << 20),
    )
    with cluster.admin(cluster.leader()) as admin:
        admin.PublishVersion(admin_pb2.PublishVersionRequest(
            spec=spec, version=VERSION, changes=types_pb2.ChangeSet(features=["first"])),
            timeout=30)
        admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=VERSION,
                                             building="demo", replicas=3), timeout=30)


def hosts(cluster: RealCluster) -> dict[str, Any]:
    with cluster.admin(cluster.leader()) as admin:
        found = admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5).hosts
    return {h.host_id: h for h in found}


def alive_hosts(cluster: RealCluster) -> dict[str, Any]:
    found = hosts(cluster)
    status = {h: v.status for h, v in found.items()}
    assert status == dict.fromkeys(HOSTS, "alive"), status
    return found


def instances(cluster: RealCluster, unit: str = UNIT) -> list[Any]:
    with cluster.admin(cluster.leader()) as admin:
        request = admin_pb2.ListInstancesRequest(apartment=APARTMENT, unit=unit)
        return list(admin.ListInstances(request, timeout=5).instances)


def running(cluster: RealCluster, unit: str = UNIT) -> dict[str, str]:
    """instance id -> host id, once exactly three instances of ``unit`` are RUNNING."""
    found = instances(cluster, unit)
    assert len(found) == 3 and all(i.state == types_pb2.INSTANCE_STATE_RUNNING for i in found), \
        [(i.instance_id, i.host_id, i.state) for i in found]
    return {i.instance_id: i.host_id for i in found}


def containers(unit: str | None = None, running_only: bool = True) -> dict[str, tuple[str, str]]:
    """instance id -> (docker id, status) of the test's unit containers."""
    client = docker.from_env(timeout=60)
    try:
        wanted = [OWNER, f"landlord.apartment={APARTMENT}"]
        wanted += [f"landlord.unit={unit}"] if unit else []
        found = client.containers.list(all=not running_only, filters={"label": wanted})
        return {c.labels["landlord.instance"]: (c.id, c.status) for c in found}
    finally:
        client.close()


def servers(agent: AgentProcess, unit: str = UNIT) -> dict[str, tuple[int, str, str, int]]:
    """server -> (weight, admin state, address, port) in the host's weighted backend."""
    socket = AdminSocket(HaproxyPaths(agent.data_dir / "haproxy").admin_socket, timeout=5)
    text = asyncio.run(socket.show(f"show servers state be.{APARTMENT}.{unit}"))
    return {r.server: (r.weight, str(r.admin_state), r.addr, r.port)
            for r in parse_servers_state(text)}


def routed(agent: AgentProcess, unit: str = UNIT) -> set[str]:
    """The servers that get traffic: ready with a weight."""
    return {name for name, (weight, state, _, _) in servers(agent, unit).items()
            if weight > 0 and state == ServerState.READY}


def get(address: str, port: int) -> dict[str, Any]:
    try:
        status, found = get_json(address, port, timeout=10)
    except OSError as exc:
        raise AssertionError(f"{address}:{port} did not answer: {exc!r}") from None
    if status != 200:
        raise AssertionError(f"{address}:{port} answered {status}")
    return found


def reaches_exactly(address: str, port: int, expected: set[str]) -> bool:
    """Requests through ``address`` reach every instance of ``expected`` and no other."""
    seen: set[str] = set()
    for _ in range(40):
        seen.add(get(address, port)["instance"])
        assert seen <= expected, (address, seen - expected)
        if seen == expected:
            return True
    raise AssertionError(f"{address} reached only {sorted(seen)} of {sorted(expected)}")


def routes_only(a: AgentProcess, expected: set[str], unit: str = UNIT) -> None:
    eventually(lambda: routed(a, unit) == expected, timeout=30,
               message=f"{a.host_id} routes exactly to {sorted(expected)}")


def serves(address: str, port: int, expected: set[str]) -> None:
    eventually(lambda: reaches_exactly(address, port, expected), timeout=30, interval=0.5,
               message=f"{address}:{port} serves {sorted(expected)}")


def holds(check: Callable[[], object], seconds: float) -> None:
    """``check`` (which raises on a failure) passes on every try for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.5)


def wait_registered(cluster: RealCluster, coordinator: str, offsets: dict[str, int],
                    since: float) -> dict[str, float]:
    """Wait for every agent to log its registration with ``coordinator`` (host -> seconds)."""
    seen: dict[str, float] = {}

    def all_registered() -> bool:
        for a in cluster.agents:
            with a.log_path.open("rb") as log:
                log.seek(offsets[a.host_id])
                if f"registered with coordinator {coordinator} ".encode() in log.read():
                    seen.setdefault(a.host_id, time.monotonic() - since)
        return len(seen) == len(cluster.agents)

    eventually(all_registered, timeout=45, interval=0.1,
               message=f"every agent registered with {coordinator}")
    return seen


def agent(cluster: RealCluster, host_id: str) -> AgentProcess:
    return next(a for a in cluster.agents if a.host_id == host_id)


def test_hosts_register_and_instances_spread_over_them(cluster: RealCluster,
                                                       service_port: int) -> None:
    found = eventually(lambda: alive_hosts(cluster), timeout=60)
    assert {h: found[h].address for h in HOSTS} == HOSTS
    for host in found.values():
        assert host.building == "demo" and host.agent_version
        assert host.capacity.cpu_millis > 0 and host.capacity.memory_bytes > 0
    placed = eventually(lambda: running(cluster), timeout=90, message="three running")
    assert sorted(placed.values()) == sorted(HOSTS)  # spread: one per host
    allocated = {h: v.allocated.cpu_millis for h, v in hosts(cluster).items()}
    assert allocated == {h: 200 for h in HOSTS}
    assert {i: s for i, (_, s) in containers(UNIT).items()} == dict.fromkeys(placed, "running")
    for a in cluster.agents:
        routes_only(a, set(placed))
        serves(a.address, service_port, set(placed))


def test_lost_host_is_replaced_and_reconciled_when_it_returns(cluster: RealCluster,
                                                              service_port: int) -> None:
    before = eventually(lambda: running(cluster), timeout=90)
    [victim] = [i for i, h in before.items() if h == host_id("h3")]
    dead = agent(cluster, host_id("h3"))
    killed_at = time.monotonic()
    dead.kill()
    removed = dead.remove_containers()
    dead.shutdown_haproxy()
    assert removed >= 1 and not dead.haproxy.processes()

    def replaced() -> list[Any]:
        found = instances(cluster)
        assert len(found) == 3 and victim not in {i.instance_id for i in found}, found
        assert all(i.host_id != host_id("h3") for i in found), found
        return found

    eventually(replaced, timeout=GRACE + 60, interval=0.2, message="the lost instance placed")
    placed_after = time.monotonic() - killed_at
    after = eventually(lambda: running(cluster), timeout=60, interval=0.2)
    running_after = time.monotonic() - killed_at
    print(f"\nhost h3 killed: its instance placed again after {placed_after:.1f}s, running "
          f"after {running_after:.1f}s (grace {GRACE}s + 5s = {GRACE + 5}s)")
    assert hosts(cluster)[host_id("h3")].status == "lost"
    assert set(after.values()) <= {host_id("h1"), host_id("h2")} and victim not in after
    # every remaining data plane routes only to live instances, and serves them all
    for a in (agent(cluster, host_id("h1")), agent(cluster, host_id("h2"))):
        routes_only(a, set(after))
        serves(a.address, service_port, set(after))
    assert set(containers(UNIT)) == set(after)

    # the host comes back, empty: it is alive again and nothing is duplicated
    dead.start()
    eventually(lambda: hosts(cluster)[host_id("h3")].status == "alive", timeout=60,
               message="h3 alive again")

    def reconciled() -> bool:
        assert running(cluster) == after  # exactly the three replicas, none moved
        assert set(containers(UNIT)) == set(after)
        assert victim not in containers(UNIT, running_only=False)  # not restarted on h3
        assert routed(dead) == set(after)
        return True

    eventually(reconciled, timeout=60, interval=0.5, message="h3 reconciled")
    serves(dead.address, service_port, set(after))
    holds(reconciled, 1.5 * HEARTBEAT)
    with cluster.admin(cluster.leader()) as admin:
        events = [e.type for e in admin.StreamEvents(admin_pb2.StreamEventsRequest(),
                                                     timeout=10)]
    assert "host.lost" in events and "host.returned" in events, events


def test_leader_failover_keeps_every_instance(cluster: RealCluster, service_port: int) -> None:
    before = eventually(lambda: running(cluster), timeout=60)
    eventually(lambda: alive_hosts(cluster), timeout=60)
    for agent in cluster.agents:  # the planes compared below are those the leader sent
        routes_only(agent, set(before))
    docker_before = containers(UNIT)
    planes_before = {a.host_id: servers(a) for a in cluster.agents}
    leader = cluster.leader()
    [follower] = [c for c in cluster.coordinators if c is not leader]
    logged = {a.host_id: a.log_path.stat().st_size for a in cluster.agents}
    killed_at = time.monotonic()
    leader.kill()
    eventually(lambda: follower.leader_info().this_is_leader, timeout=30, interval=0.1,
               message="the follower leading")
    leads_after = time.monotonic() - killed_at

    on_follower = wait_registered(cluster, follower.name, logged, killed_at)
    print(f"\nleader {leader.name} killed: {follower.name} leads after {leads_after:.1f}s "
          f"(lease {LEASE}s); agents registered with it after "
          + ", ".join(f"{h} {t:.1f}s" for h, t in sorted(on_follower.items())))
    assert cluster.leader() is follower
    eventually(lambda: alive_hosts(cluster), timeout=30, message="hosts alive on the new leader")

    def unchanged() -> bool:
        assert running(cluster) == before  # nothing lost, duplicated or moved
        assert containers(UNIT) == docker_before  # the very same containers, running
        assert {a.host_id: servers(a) for a in cluster.agents} == planes_before
        return True

    eventually(unchanged, timeout=30, interval=0.5)
    holds(unchanged, 2 * HEARTBEAT)
    # the killed coordinator comes back as a follower
    leader.start()
    assert not leader.leader_info().this_is_leader and cluster.leader() is follower


def test_etcd_outage_leaves_data_plane_untouched_then_reconciles(cluster: RealCluster,
                                                                 service_port: int) -> None:
    before = eventually(lambda: running(cluster), timeout=60)
    eventually(lambda: alive_hosts(cluster), timeout=60)
    for a in cluster.agents:
        routes_only(a, set(before))
    docker_before = containers(running_only=False)
    planes_before = {a.host_id: servers(a) for a in cluster.agents}
    load = Load(service_port).start(max_seconds=OUTAGE + 60)
    try:
        eventually(lambda: len(load.answers()) >= 30, timeout=30)
        start = time.monotonic()
        logged = {a.host_id: a.log_path.stat().st_size for a in cluster.agents}
        cluster.etcd.stop()
        checks = 0
        while time.monotonic() - start < OUTAGE:
            assert containers(running_only=False) == docker_before
            assert {a.host_id: servers(a) for a in cluster.agents} == planes_before
            assert all(a.running for a in cluster.agents)
            checks += 1
            time.sleep(1)
        cluster.etcd.start()
        back = time.monotonic()
        eventually(lambda: len(load.since(back)) >= 30, timeout=30)
    finally:
        load.close()
    outage = load.since(start)
    failed = [a for a in outage if not a.ok]
    print(f"\netcd down {back - start:.1f}s: {len(outage)} requests through the entry points, "
          f"{len(failed)} failed; {checks} checks of containers and data planes")
    assert not failed, failed[:10]
    assert len(outage) > 100 and {a.host for a in outage} == set(HOSTS.values())
    assert containers(running_only=False) == docker_before

    leader = cluster.leader(timeout=60)
    on_leader = wait_registered(cluster, leader.name, logged, back)
    eventually(lambda: alive_hosts(cluster), timeout=60, message="hosts alive after the outage")
    recovered = time.monotonic() - back
    assert running(cluster) == before
    # a change made after recovery is carried out on the agents
    later_port = free_port_on_all(list(HOSTS.values()))
    publish_and_deploy(cluster, LATER_UNIT, later_port)
    placed = eventually(lambda: running(cluster, LATER_UNIT), timeout=90,
                        message="the later unit running")
    deployed = time.monotonic() - back
    print(f"after etcd returned: {leader.name} leads; agents registered with it after "
          + ", ".join(f"{h} {t:.1f}s" for h, t in sorted(on_leader.items()))
          + f"; hosts alive after {recovered:.1f}s, a new deployment running after "
          f"{deployed:.1f}s")
    assert sorted(placed.values()) == sorted(HOSTS)
    assert set(containers(LATER_UNIT)) == set(placed)
    for a in cluster.agents:
        serves(a.address, later_port, set(placed))
    assert containers(UNIT) == {i: v for i, v in docker_before.items() if i in before}
