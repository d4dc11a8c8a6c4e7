"""End to end: a private etcd, coordinator processes and SIMULATED agent processes.

The agents are tests/e2e/simulated_agent.py (the real stream client over a fake in-memory
runtime) until the real agent daemon can run containers; everything else is real.
Timings are short on purpose (heartbeat 1 s, grace 3 s, leader lease 3 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.processes import wait_for

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.cluster import Cluster

RUNNING = types_pb2.INSTANCE_STATE_RUNNING


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.start_etcd()
    try:
        yield c
    except Exception:
        print(c.logs())
        raise
    finally:
        c.close()


def publish_and_deploy(admin: Any, replicas: int, unit: str = "web") -> None:
    spec = types_pb2.UnitSpec(
        apartment="shop",
        unit=unit,
        image="demo:1",
        service_port=18080,
        resources=types_pb2.Resources(cpu_millis=500, memory_bytes=256 << 20),
    )
    admin.PublishVersion(
        admin_pb2.PublishVersionRequest(
            spec=spec, version="1.0.0", changes=types_pb2.ChangeSet(features=["first"])
        )
    )
    admin.Deploy(
        admin_pb2.DeployRequest(apartment="shop", unit=unit, version="1.0.0", replicas=replicas)
    )


def instances(admin: Any) -> list[Any]:
    return list(admin.ListInstances(admin_pb2.ListInstancesRequest(), timeout=3).instances)


def all_running(admin: Any, count: int) -> list[Any]:
    found = instances(admin)
    ok = len(found) == count and all(i.state == RUNNING for i in found)
    return found if ok else []


def test_registration_capacity_spread_and_routes(cluster: Cluster) -> None:
    cluster.add_coordinator()
    agents = [
        cluster.add_agent(f"h{n}", f"127.0.0.{n + 1}", cpu_millis=2000 * n) for n in (1, 2, 3)
    ]
    with cluster.admin() as admin:
        hosts = wait_for(lambda: _alive_hosts(admin, 3), 15, "three hosts registered")
        assert {h.host_id: h.capacity.cpu_millis for h in hosts} == {
            "h1": 2000,
            "h2": 4000,
            "h3": 6000,
        }
        assert {h.address for h in hosts} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        publish_and_deploy(admin, replicas=3)
        placed = wait_for(lambda: all_running(admin, 3), 15, "three instances running")
        # spread: never two of the unit and slot on one host while another has room
        assert sorted(i.host_id for i in placed) == ["h1", "h2", "h3"]
        allocated = {
            h.host_id: h.allocated.cpu_millis
            for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts
        }
        assert allocated == {"h1": 500, "h2": 500, "h3": 500}
    # every host's data plane lists all three instances with traffic
    for agent in agents:
        route = wait_for(lambda a=agent: _route_weights(a), 10, f"route on {agent.host_id}")
        assert set(route) == {i.instance_id for i in placed}
        assert all(w > 0 for w in route.values())


def _alive_hosts(admin: Any, count: int) -> list[Any]:
    hosts = list(admin.ListHosts(admin_pb2.ListHostsRequest()).hosts)
    return hosts if len(hosts) == count and all(h.status == "alive" for h in hosts) else []


def _route_weights(agent: Any, unit: str = "shop/web") -> dict[str, int]:
    servers = agent.state().get("routes", {}).get(unit, [])
    weights = {s["server"]: s["weight"] for s in servers}
    return weights if weights and all(w > 0 for w in weights.values()) else {}


def test_lost_host_is_replaced_and_reconciled_when_it_returns(cluster: Cluster) -> None:
    cluster.add_coordinator()
    a1, a2, a3 = (cluster.add_agent(f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2, 3))
    with cluster.admin() as admin:
        wait_for(
            lambda: len(admin.ListHosts(admin_pb2.ListHostsRequest()).hosts) == 3, 15, "hosts"
        )
        publish_and_deploy(admin, replicas=3)
        before = wait_for(lambda: all_running(admin, 3), 15, "running")
        victim = next(i for i in before if i.host_id == "h3")
        a3.kill()
        killed_at = time.monotonic()
        # grace 3 s after 1.5 heartbeats of silence, plus 5 s to place and start again
        after = wait_for(
            lambda: (
                [i for i in all_running(admin, 3) if i.host_id != "h3"]
                if not any(i.host_id == "h3" for i in instances(admin))
                else []
            ),
            1.5 + 3 + 5,
            "the lost host's instance placed again",
        )
        print(f"replaced {time.monotonic() - killed_at:.1f}s after the kill")
        assert len(after) == 3 and victim.instance_id not in {i.instance_id for i in after}
        hosts = {h.host_id: h.status for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts}
        assert hosts["h3"] == "lost"
        for agent in (a1, a2):
            wait_for(
                lambda a=agent: set(_route_weights(a)) == {i.instance_id for i in after},
                5,
                "routes without the lost host",
            )
        # the host comes back still holding its old instance: it is stopped as a duplicate
        assert victim.instance_id in a3.instances()
        a3.start()
        wait_for(
            lambda: a3.state().get("connected") and not a3.instances(),
            15,
            "duplicate stopped on the returning host",
        )
        wait_for(
            lambda: (
                {h.host_id: h.status for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts}[
                    "h3"
                ]
                == "alive"
            ),
            5,
            "host alive again",
        )
        assert {i.instance_id for i in all_running(admin, 3)} == {i.instance_id for i in after}
        # a registration's event is written after its answer, batched with other hosts'
        # (agent_sessions.announce): it follows the host's return, it does not come with it
        wait_for(
            lambda: {"host.lost", "host.returned"} <= {
                e.type for e in admin.StreamEvents(admin_pb2.StreamEventsRequest())},
            5,
            "host.lost and host.returned events",
        )


def test_leader_failover_keeps_every_instance(cluster: Cluster) -> None:
    first = cluster.add_coordinator()
    second = cluster.add_coordinator()
    a1, a2 = (cluster.add_agent(f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2))
    leader = cluster.leader()
    follower = second if leader is first else first
    with cluster.admin(leader) as admin:
        wait_for(
            lambda: len(admin.ListHosts(admin_pb2.ListHostsRequest()).hosts) == 2, 15, "hosts"
        )
        publish_and_deploy(admin, replicas=4)
        before = {
            i.instance_id: i.host_id
            for i in wait_for(lambda: all_running(admin, 4), 15, "running")
        }
    held_before = {a.host_id: set(a.instances()) for a in (a1, a2)}
    leader.kill()
    killed_at = time.monotonic()
    wait_for(lambda: follower.leader_info().this_is_leader, 10, "the follower leading")
    print(f"follower leads {time.monotonic() - killed_at:.1f}s after the kill")
    wait_for(
        lambda: all(a.state().get("coordinator") == follower.name for a in (a1, a2)),
        10,
        "agents on the new leader",
    )
    with cluster.admin(follower) as admin:
        after = {
            i.instance_id: i.host_id
            for i in wait_for(lambda: all_running(admin, 4), 10, "running under the new leader")
        }
        assert after == before  # nothing lost, nothing duplicated, nothing moved
        time.sleep(2)  # past a heartbeat: still nothing moved
        assert {i.instance_id: i.host_id for i in all_running(admin, 4)} == before
    assert {a.host_id: set(a.instances()) for a in (a1, a2)} == held_before


def test_etcd_outage_leaves_agents_untouched_then_reconciles(cluster: Cluster) -> None:
    cluster.add_coordinator()
    a1, a2 = (cluster.add_agent(f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2))
    with cluster.admin() as admin:
        wait_for(
            lambda: len(admin.ListHosts(admin_pb2.ListHostsRequest()).hosts) == 2, 15, "hosts"
        )
        publish_and_deploy(admin, replicas=2)
        before = {i.instance_id for i in wait_for(lambda: all_running(admin, 2), 15, "run")}
    for agent in (a1, a2):
        wait_for(lambda a=agent: _route_weights(a), 5, "routes")
    held = {a.host_id: (a.instances(), a.state()["routes"]) for a in (a1, a2)}
    started = {a.host_id: (a.state()["starts"], a.state()["stops"]) for a in (a1, a2)}
    cluster.etcd.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for agent in (a1, a2):
            assert agent.running
            assert (agent.instances(), agent.state()["routes"]) == held[agent.host_id]
        time.sleep(1)
    cluster.etcd.start()
    wait_for(lambda: all(a.state().get("connected") for a in (a1, a2)), 20, "agents reconnected")
    with cluster.admin() as admin:
        assert {
            i.instance_id for i in wait_for(lambda: all_running(admin, 2), 15, "run")
        } == before
    time.sleep(1)
    for agent in (a1, a2):
        assert set(agent.instances()) == set(held[agent.host_id][0])
        assert _route_weights(agent) and set(_route_weights(agent)) == before
    # reconciliation found nothing to start or stop (routes were re-sent, nothing else)
    assert {a.host_id: (a.state()["starts"], a.state()["stops"]) for a in (a1, a2)} == started
    print(cluster.logs())


def test_follower_answers_reads_and_points_writes_at_the_leader(cluster: Cluster) -> None:
    first, second = cluster.add_coordinator(), cluster.add_coordinator()
    leader = cluster.leader()
    follower = second if leader is first else first
    cluster.add_agent("h1", "127.0.0.2")
    with cluster.admin(leader) as admin:
        wait_for(lambda: admin.ListHosts(admin_pb2.ListHostsRequest()).hosts, 15, "host")
        publish_and_deploy(admin, replicas=1)
    with cluster.admin(follower) as admin:
        info = admin.GetLeader(admin_pb2.GetLeaderRequest())
        assert not info.this_is_leader and info.leader_address == leader.address
        # the first deploy is a rollout: the unit runs 1.0.0 once it is promoted
        units = wait_for(
            lambda: [u for u in admin.ListUnits(admin_pb2.ListUnitsRequest()).units
                     if u.stable_version == "1.0.0"], 30, "1.0.0 running, seen on the follower"
        )
        assert [u.unit for u in units] == ["web"]
        with pytest.raises(grpc.RpcError) as refused:
            admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(refused.value.trailing_metadata() or ())
        assert trailers.get("x-leader") == leader.address


def test_sigterm_hands_over_at_once(cluster: Cluster) -> None:
    slow = {"leader_lease_ttl": 15}  # a crash would take 15 s to hand over
    first, second = cluster.add_coordinator(slow), cluster.add_coordinator(slow)
    leader = cluster.leader()
    follower = second if leader is first else first
    leader.stop(timeout=10)  # SIGTERM: resigns, so no wait for the lease to expire
    wait_for(lambda: follower.leader_info().this_is_leader, 3, "immediate handover")
