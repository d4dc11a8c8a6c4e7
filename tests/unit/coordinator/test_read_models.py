"""The Admin API's read models: hosts with their status and allocation, instances desired
and observed, units with their instance counts; on a leader and on a follower."""

from __future__ import annotations

import dataclasses

from common.clock import FakeClock
from common.resources import Resources
from common.stream_messages import ObservedInstance, UsageReading
from coordinator.api.read_models import ClusterReads
from coordinator.fleet.liveness import HostSeen
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.keys import KeyLayout
from coordinator.state.leadership import Leadership
from coordinator.state.records import (
    Allocation,
    HostHealth,
    HostRecord,
    InstanceRecord,
    LeaderRecord,
    UnitRecord,
    VersionRecord,
    encode,
    encode_allocations,
)
from coordinator.state.store import Change, Entry

LAYOUT = KeyLayout("/ll/")


class Catalog:
    def units(self, apartment: str = "") -> list[UnitRecord]:
        return [UnitRecord("shop", "web", "running", "1.0.0"), UnitRecord("shop", "db")]

    def unit(self, apartment: str, unit: str) -> UnitRecord:
        return UnitRecord(apartment, unit, "running", "1.0.0")

    def latest(self, apartment: str, unit: str) -> VersionRecord | None:
        return None


def _instance(iid: str, host: str) -> InstanceRecord:
    return InstanceRecord(iid, "shop", "web", "1.0.0", "blue", host, 20000 + len(iid),
                          Resources(cpu=0.5, memory=64 << 20), 1.0)


def _world() -> tuple[ClusterReads, ClusterState, Fleet, Leadership, FakeClock]:
    state = ClusterState(LAYOUT)
    revision = 1

    def put(key: str, value: bytes) -> None:
        nonlocal revision
        revision += 1
        state.apply(Change("put", Entry(key, value, revision, revision)))

    for host_id, status in (("h1", HostHealth.ALIVE), ("h2", HostHealth.ALIVE),
                            ("h3", HostHealth.LOST)):
        put(LAYOUT.host(host_id), encode(HostRecord(
            host_id, "b1", "127.0.0.2", Resources(cpu=4), status=status, registered_at=5.0,
            status_changed_at=7.0)))
    for iid, host in (("i1", "h1"), ("i2", "h1"), ("i3", "h2")):
        put(LAYOUT.instance(iid), encode(_instance(iid, host)))
    allocations = {iid: Allocation(Resources(cpu=0.5, memory=64 << 20), 20000)
                   for iid in ("i1", "i2")}
    put(LAYOUT.alloc("h1"), encode_allocations(allocations))
    put(LAYOUT.alive("h1"), b"")
    fleet, clock = Fleet(), FakeClock(1_000.0)
    leadership = Leadership(LeaderRecord("c1", "127.0.0.1:7400"), state)

    def known(iid: str) -> ObservedInstance | None:
        return fleet.freshest(iid)

    return ClusterReads(state, fleet, leadership, clock, known, Catalog()), state, fleet, (
        leadership), clock


def test_hosts_on_a_follower_come_from_etcd() -> None:
    reads, *_ = _world()
    hosts = {h.host.host_id: h for h in reads.hosts()}
    assert {k: (h.status, h.last_seen) for k, h in hosts.items()} == {
        "h1": ("alive", 7.0), "h2": ("suspect", 7.0), "h3": ("lost", 7.0)}
    assert hosts["h1"].allocated == Resources(cpu=1.0, memory=128 << 20)
    assert hosts["h2"].allocated == Resources()
    assert reads.hosts("elsewhere") == []


def test_hosts_on_the_leader_come_from_its_sessions() -> None:
    reads, _, fleet, leadership, clock = _world()
    leadership.take(object())  # type: ignore[arg-type]  # any fence: leading
    fleet.seen["h1"] = HostSeen(clock.monotonic() - 3.0, True)
    fleet.health["h1"] = HostHealth.ALIVE
    hosts = {h.host.host_id: h for h in reads.hosts()}
    assert (hosts["h1"].status, hosts["h1"].last_seen) == ("alive", clock.now() - 3.0)
    assert (hosts["h2"].status, hosts["h2"].last_seen) == ("suspect", 5.0)
    assert hosts["h3"].status == "lost"


def test_instances_desired_then_observed_ones_being_stopped() -> None:
    reads, _, fleet, *_ = _world()
    fleet.observe(ObservedInstance("i1", "h1", "shop", "web", "1.0.0", "blue", "running"))
    fleet.observe(ObservedInstance("old", "h1", "shop", "web", "0.9.0", "blue", "stopping"))
    fleet.observe(ObservedInstance("gone", "h1", "shop", "web", "0.9.0", "blue", "stopped"))
    on_h1 = reads.instances(host_id="h1")
    assert [(i.record.instance_id if i.record else None,
             i.observed.instance_id if i.observed else None) for i in on_h1] == [
        ("i1", "i1"), ("i2", None), (None, "old")]
    assert [i.record.instance_id for i in reads.instances(apartment="shop", unit="web")
            if i.record] == ["i1", "i2", "i3"]
    assert reads.instances(apartment="shop", unit="db") == []


def test_units_count_their_instances() -> None:
    reads, *_ = _world()
    assert [(u.unit.unit, u.instances) for u in reads.units()] == [("web", 3), ("db", 0)]
    detail = reads.unit("shop", "web")
    assert detail.unit.instances == 3 and len(detail.instances) == 3 and detail.latest is None
    assert (detail.unit.paused, detail.unit.collected) == (0, 0)


def test_units_count_paused_and_collected_instances() -> None:
    reads, state, *_ = _world()
    revision = 100
    for iid, change in (("i1", {"paused": True}), ("i3", {"collected_at": 9.0})):
        revision += 1
        record = dataclasses.replace(_instance(iid, "h1" if iid == "i1" else "h2"), **change)
        state.apply(Change("put", Entry(LAYOUT.instance(iid), encode(record), revision,
                                        revision)))
    listed = next(u for u in reads.units() if u.unit.unit == "web")
    assert (listed.instances, listed.paused, listed.collected) == (3, 1, 1)
    detail = reads.unit("shop", "web").unit
    assert (detail.instances, detail.paused, detail.collected) == (3, 1, 1)


def test_instances_show_the_usage_reported_since_their_observation() -> None:
    reads, _, fleet, *_ = _world()
    fleet.observe(ObservedInstance("i1", "h1", "shop", "web", "1.0.0", "blue", "running",
                                   usage={"cpu_cores": 0.1}))
    fleet.observe(ObservedInstance("old", "h1", "shop", "web", "0.9.0", "blue", "stopping"))
    fleet.observe_usage(UsageReading("i1", {"cpu_cores": 0.7}, 50.0))
    fleet.observe_usage(UsageReading("old", {"cpu_cores": 0.3}, 0.0))
    fleet.observe_usage(UsageReading("never-observed", {"cpu_cores": 9.0}, 0.0))
    shown = {(i.observed.instance_id, i.observed.usage["cpu_cores"], i.observed.last_activity)
             for i in reads.instances(host_id="h1") if i.observed}
    assert shown == {("i1", 0.7, 50.0), ("old", 0.3, 0.0)}
    assert "never-observed" not in fleet.usage
    fleet.observe(ObservedInstance("i1", "h1", "shop", "web", "1.0.0", "blue", "stopping",
                                   usage={"cpu_cores": 0.2}))  # a full observation is newer
    assert fleet.freshest("i1").usage == {"cpu_cores": 0.2}  # type: ignore[union-attr]
    fleet.unobserve("old")
    fleet.forget_observations("h1")
    assert fleet.usage == {} and fleet.activity == {} and fleet.freshest("i1") is None
