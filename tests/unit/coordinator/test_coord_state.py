"""The typed read model: records, revisions, indexes and the event feed."""

from __future__ import annotations

import json

from common.resources import Resources
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.state.cluster_state import ClusterState
from coordinator.state.keys import KeyLayout
from coordinator.state.records import (
    Allocation,
    EventRecord,
    HostHealth,
    HostRecord,
    InstanceRecord,
    VersionRecord,
    decode,
    encode,
    encode_allocations,
)
from coordinator.state.store import Change, Entry

LAYOUT = KeyLayout("/ll/")


def put(key: str, value: bytes, revision: int, create: int = 0) -> Change:
    return Change("put", Entry(key, value, create or revision, revision))


def delete(key: str, revision: int) -> Change:
    return Change("delete", Entry(key, b"", 0, revision))


def instance(iid: str, host: str, unit: str = "web") -> InstanceRecord:
    return InstanceRecord(iid, "shop", unit, "1.0.0", "blue", host, 20000, Resources(cpu=1), 1.0)


def test_layout_normalises_the_prefix_and_parses_keys() -> None:
    assert LAYOUT.prefix == "/ll" and LAYOUT.root == "/ll/"
    assert LAYOUT.kind_of(LAYOUT.version("a", "u", "1.0.0")) == ("versions", ("a", "u", "1.0.0"))
    assert LAYOUT.kind_of(LAYOUT.leader) == ("leader", ())
    assert LAYOUT.kind_of("/elsewhere/x") == ("", ())


def test_records_round_trip() -> None:
    host = HostRecord("h1", "b", "127.0.0.2", Resources(cpu=2, memory=1 << 30), {"r": "1"},
                      ("cpu",), "v", ("demo:1",))
    assert decode(HostRecord, encode(host)) == host
    assert host.same_registration(HostRecord(**{**host.__dict__, "registered_at": 5.0}))
    assert decode(InstanceRecord, encode(instance("i", "h1"))) == instance("i", "h1")


def test_hosts_are_indexed_by_building_and_lost_status_through_changes() -> None:
    state = ClusterState(LAYOUT)

    def host(host_id: str, building: str, status: str = "alive") -> bytes:
        return encode(HostRecord(host_id, building, "127.0.0.2", Resources(cpu=1),
                                 status=HostHealth(status)))

    state.apply(put(LAYOUT.host("h2"), host("h2", "b1"), 2))
    state.apply(put(LAYOUT.host("h1"), host("h1", "b1"), 3))
    state.apply(put(LAYOUT.host("h3"), host("h3", "b2", "lost"), 4))
    assert [h.host_id for h in state.hosts_in("b1")] == ["h1", "h2"]
    assert state.lost_host_ids() == {"h3"} and state.hosts_in("nowhere") == []
    state.apply(put(LAYOUT.host("h1"), host("h1", "b2", "lost"), 5))  # moved, and lost
    state.apply(put(LAYOUT.host("h3"), host("h3", "b2"), 6))  # back
    assert [h.host_id for h in state.hosts_in("b1")] == ["h2"]
    assert [h.host_id for h in state.hosts_in("b2")] == ["h1", "h3"]
    assert state.lost_host_ids() == {"h1"}
    state.apply(delete(LAYOUT.host("h1"), 7))
    assert [h.host_id for h in state.hosts_in("b2")] == ["h3"] and not state.lost_host_ids()


def test_instances_are_indexed_by_host_and_unit_through_moves_and_deletes() -> None:
    state = ClusterState(LAYOUT)
    state.apply(put(LAYOUT.instance("i1"), encode(instance("i1", "h1")), 2))
    state.apply(put(LAYOUT.instance("i2"), encode(instance("i2", "h1", "api")), 3))
    assert [i.instance_id for i in state.instances_on("h1")] == ["i1", "i2"]
    state.apply(put(LAYOUT.instance("i1"), encode(instance("i1", "h2")), 4))
    assert [i.instance_id for i in state.instances_on("h1")] == ["i2"]
    assert [i.instance_id for i in state.instances_of("shop", "web")] == ["i1"]
    assert state.instances["i1"].mod_revision == 4
    state.apply(delete(LAYOUT.instance("i1"), 5))
    assert state.instances_on("h2") == [] and state.instances_of("shop", "web") == []


def test_allocations_alive_keys_and_bad_values() -> None:
    state = ClusterState(LAYOUT)
    state.apply(put(LAYOUT.alloc("h1"), encode_allocations(
        {"i1": Allocation(Resources(cpu=1), 20000)}), 7))
    allocations, revision = state.allocation_of("h1")
    assert revision == 7 and allocations["i1"].port == 20000
    assert state.allocation_of("h9") == ({}, 0)
    state.apply(Change("put", Entry(LAYOUT.alive("h1"), b"{}", 8, 8, lease=42)))
    assert state.alive == {"h1": 42}
    state.apply(put(LAYOUT.host("h2"), b"not json", 9))  # logged and skipped
    assert "h2" not in state.hosts


def test_events_get_unique_ordered_sequences_and_reach_subscribers() -> None:
    state = ClusterState(LAYOUT)
    queue = state.subscribe_events()
    for index, name in enumerate(["a", "b"]):
        event = EventRecord(type="t", time=1.0, message=name, batch_index=index)
        state.apply(put(LAYOUT.event(1, index), encode(event), 10))
    history = state.event_history()
    assert [e.sequence for e in history] == [10_000, 10_001]
    assert [queue.get_nowait().message for _ in range(2)] == ["a", "b"]
    state.unsubscribe_events(queue)
    assert not state.is_subscribed(queue)


def test_events_are_indexed_by_instance_until_trimmed() -> None:
    state = ClusterState(LAYOUT)
    for revision, (iid, message) in enumerate([("i1", "one"), ("i2", "two"), ("i1", "three"),
                                               ("", "none")], start=10):
        event = EventRecord(type="t", time=1.0, message=message, instance_id=iid)
        state.apply(put(LAYOUT.event(revision, 0), encode(event), revision))
    assert [e.message for e in state.events_of_instance("i1")] == ["one", "three"]
    assert [e.message for e in state.events_of_instance("i2")] == ["two"]
    assert state.events_of_instance("") == [] and state.events_of_instance("i9") == []
    state.apply(delete(LAYOUT.event(10, 0), 20))  # trimmed from the history
    assert [e.message for e in state.events_of_instance("i1")] == ["three"]
    state.apply(delete(LAYOUT.event(12, 0), 21))
    state.apply(delete(LAYOUT.event(11, 0), 22))
    assert state.events_of_instance("i1") == [] and not state._events_by_instance



def test_a_record_written_before_a_bound_it_now_breaks_is_skipped_not_fatal() -> None:
    state = ClusterState(LAYOUT)
    spec = UnitSpec("shop", "web", "1.0.0", "demo:1", 0, service_port=9000)
    good = VersionRecord(VersionTag("shop/web", "1.0.0", 1.0, spec.checksum(), spec))
    old = json.loads(encode(good))
    old["tag"]["spec"]["service_port"] = 2379  # accepted before control-plane ports were
    state.apply(put(LAYOUT.version("shop", "web", "0.9.0"), json.dumps(old).encode(), 2))
    state.apply(put(LAYOUT.version("shop", "web", "1.0.0"), encode(good), 3))
    assert list(state.versions[("shop", "web")]) == ["1.0.0"]
