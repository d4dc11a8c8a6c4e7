"""Forgetting lost hosts: the pure decision (coordinator/fleet/forgetting.py), the liveness
guard that never holds an empty host, and the forgetter on an in-memory store."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from memory_store import CurrentCache, Leading, MemoryStore

from common.clock import FakeClock
from common.event_types import EventType
from common.resources import Resources
from coordinator.fleet.forgetter import HostForgetter
from coordinator.fleet.forgetting import ForgetAction, LostHost, plan_forgetting
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.liveness import HostSeen, LivenessPolicy, plan_liveness
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import (
    Allocation,
    HostHealth,
    HostRecord,
    InstanceRecord,
    StatusRecord,
    encode,
    encode_allocations,
)
from coordinator.state.store import Txn

DAY = 86400.0
NOW = 1_700_000_000.0
LAYOUT = KeyLayout()

# -- the decision ----------------------------------------------------------------------------

lost_hosts = st.lists(
    st.builds(LostHost, host_id=st.text("abc", min_size=1, max_size=3),
              lost_since=st.one_of(st.just(0.0), st.floats(NOW - 3 * DAY, NOW + 60)),
              placed=st.integers(0, 3), connected=st.booleans()),
    unique_by=lambda h: h.host_id, max_size=12)


@given(lost_hosts, st.floats(1, 2 * DAY))
def test_forgets_exactly_the_empty_unconnected_hosts_lost_past_the_wait(
        hosts: list[LostHost], forget_after: float) -> None:
    decisions = {d.host_id: d for d in plan_forgetting(hosts, NOW, forget_after)}
    for host in hosts:
        decision = decisions.get(host.host_id)
        due = host.lost_since > 0 and NOW - host.lost_since >= forget_after
        if decision is not None and decision.action == ForgetAction.FORGET:
            assert host.placed == 0 and not host.connected  # never with instances on it
            assert due  # never before the wait is over, never without a lost time
            assert decision.lost_for >= forget_after
        elif due and host.placed == 0 and not host.connected:
            pytest.fail(f"{host} is due but was not forgotten: {decision}")
        if host.lost_since <= 0:
            assert decision is not None and decision.action == ForgetAction.STAMP
        elif not due:
            assert decision is None  # within the wait: nothing to do, nothing logged


def test_a_host_kept_for_its_instances_says_why() -> None:
    [kept] = plan_forgetting([LostHost("h1", NOW - 2 * DAY, placed=2)], NOW, DAY)
    assert kept.action == ForgetAction.KEEP
    assert "2 instance(s) are still placed on it (no room elsewhere yet)" in kept.reason
    [paused] = plan_forgetting([LostHost("h1", NOW - 2 * DAY, placed=2, paused=1)], NOW, DAY)
    assert paused.action == ForgetAction.KEEP
    assert "(1 of them paused: they stay until resumed" in paused.reason


def test_the_wait_ends_forget_after_seconds_past_the_lost_time() -> None:
    host = LostHost("h1", NOW - DAY + 5, placed=0)
    assert plan_forgetting([host], NOW, DAY) == []
    [forget] = plan_forgetting([host], NOW + 5, DAY)
    assert forget.action == ForgetAction.FORGET


# -- the liveness guard ---------------------------------------------------------------------

def test_mass_silence_holds_hosts_with_instances_but_not_empty_ones() -> None:
    policy = LivenessPolicy(heartbeat_interval=10, grace=10)
    seen = {f"h{i}": HostSeen(100, False, 100) for i in range(4)}
    seen["live"] = HostSeen(120, True)
    buildings = dict.fromkeys(seen, "b1")
    current = dict.fromkeys(seen, HostHealth.ALIVE)
    changes = plan_liveness(seen, current, 120, policy, buildings, empty={"h2", "h3"})
    assert {c.host_id: c.after for c in changes} == {
        "h0": HostHealth.SUSPECT, "h1": HostHealth.SUSPECT,  # held: they hold instances
        "h2": HostHealth.LOST, "h3": HostHealth.LOST}        # losing them moves nothing


# -- the forgetter on an in-memory store ----------------------------------------------------

class Rig:
    def __init__(self, forget_after: float = DAY) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        self.clock = FakeClock(NOW)
        self.fleet = Fleet()
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        self.hosts = HostRecords(self.store, writes, LAYOUT, self.state, self.clock, 5)
        self.events = EventLog(writes, LAYOUT, self.state, self.clock)
        self.forgetter = HostForgetter(hosts=self.hosts, state=self.state, fleet=self.fleet,
                                       events=self.events, clock=self.clock,
                                       forget_after=forget_after)

    def host(self, host_id: str, status: HostHealth = HostHealth.LOST,
             changed_at: float = NOW) -> HostRecord:
        record = HostRecord(host_id, "b1", "127.0.0.2", Resources(cpu=4, memory=4 << 30),
                            status=status, status_changed_at=changed_at)
        self.store.put(LAYOUT.host(host_id), encode(record))
        return record

    def instance(self, iid: str, host_id: str) -> None:
        record = InstanceRecord(iid, "shop", "web", "1.0.0", "blue", host_id, 20000,
                                Resources(cpu=1, memory=1 << 30), NOW)
        self.store.put(LAYOUT.instance(iid), encode(record))
        self.store.put(LAYOUT.alloc(host_id), encode_allocations(
            {iid: Allocation(record.resources, record.port)}))

    def status(self, iid: str, host_id: str) -> None:
        self.store.put(LAYOUT.status(iid), encode(StatusRecord(iid, host_id, "running", True)))

    def stored(self) -> set[str]:
        return {k for k in self.store.entries if not k.startswith(LAYOUT.events)}

    def events_of(self, type_: str) -> list[str]:
        return [e.host_id for e in self.state.event_history() if e.type == type_]


async def test_a_host_lost_past_the_wait_leaves_etcd_with_everything_keyed_by_it() -> None:
    rig = Rig()
    rig.host("gone")
    rig.store.put(LAYOUT.alive("gone"), b'{"since":1}')
    rig.store.put(LAYOUT.alloc("gone"), encode_allocations({}))
    rig.status("old-1", "gone")  # an instance that no longer exists
    rig.host("other")
    rig.instance("i1", "other")
    rig.status("i1", "other")
    rig.fleet.expect(["gone"], 0.0)
    before = rig.stored()
    assert await rig.forgetter.tick() == 0  # lost just now
    rig.clock.advance(DAY - 1)
    assert await rig.forgetter.tick() == 0
    rig.clock.advance(1)
    commits = len(rig.store.commits)
    assert await rig.forgetter.tick() == 1
    assert len(rig.store.commits) == commits + 1  # records and event together
    assert before - rig.stored() == {LAYOUT.host("gone"), LAYOUT.alive("gone"),
                                   LAYOUT.alloc("gone"), LAYOUT.status("old-1")}
    assert rig.events_of(EventType.HOST_FORGOTTEN) == ["gone"]
    assert "gone" not in rig.fleet.seen
    assert await rig.forgetter.tick() == 0  # nothing left to do


async def test_a_host_still_holding_instances_is_kept_and_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.host("full", changed_at=NOW - 2 * DAY)
    rig.instance("stuck", "full")
    with caplog.at_level(logging.WARNING, "coordinator.fleet.forgetter"):
        for _ in range(3):
            assert await rig.forgetter.tick() == 0
    said = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()]
    assert len(said) == 1 and "1 instance(s) are still placed on it" in said[0], said
    assert LAYOUT.host("full") in rig.stored()
    # once its instance went elsewhere, it goes
    await rig.store.commit(Txn().delete(LAYOUT.instance("stuck")).delete(LAYOUT.alloc("full")))
    assert await rig.forgetter.tick() == 1
    assert LAYOUT.host("full") not in rig.stored()


async def test_a_host_registering_again_meanwhile_is_not_forgotten() -> None:
    rig = Rig()
    record = rig.host("back", changed_at=NOW - 2 * DAY)

    def registers() -> None:
        rig.store.before_commit = None
        rig.store.put(LAYOUT.host("back"), encode(replace(record, status=HostHealth.ALIVE)))

    rig.store.before_commit = registers
    assert await rig.forgetter.tick() == 0
    assert rig.state.hosts["back"].value.status == HostHealth.ALIVE
    assert rig.events_of(EventType.HOST_FORGOTTEN) == []


async def test_alive_hosts_and_connected_ones_are_never_forgotten() -> None:
    rig = Rig()
    rig.host("up", status=HostHealth.ALIVE, changed_at=NOW - 3 * DAY)
    rig.host("reconnecting", changed_at=NOW - 3 * DAY)
    rig.fleet.attach(HostSession("reconnecting", "b1", "127.0.0.2", 0.0), 0.0)
    assert await rig.forgetter.tick() == 0
    assert {LAYOUT.host("up"), LAYOUT.host("reconnecting")} <= rig.stored()


async def test_a_lost_record_without_a_lost_time_is_stamped_not_forgotten() -> None:
    rig = Rig()
    rig.host("legacy", changed_at=0.0)
    assert await rig.forgetter.tick() == 0
    assert rig.state.hosts["legacy"].value.status_changed_at == NOW
    rig.clock.advance(DAY)
    assert await rig.forgetter.tick() == 1


async def test_many_leftover_statuses_go_in_batches_before_the_host() -> None:
    rig = Rig()
    rig.host("busy", changed_at=NOW - 2 * DAY)
    for n in range(300):
        rig.status(f"old-{n}", "busy")
    assert await rig.forgetter.tick() == 1
    assert rig.stored() == set()
    assert all(t.size <= rig.store.max_txn_ops - 2 for t in rig.store.commits)


async def test_a_round_forgets_a_bounded_number_of_hosts() -> None:
    rig = Rig()
    rig.forgetter.per_round = 5
    for n in range(12):
        rig.host(f"h{n:02d}", changed_at=NOW - 2 * DAY)
    assert [await rig.forgetter.tick() for _ in range(4)] == [5, 5, 2, 0]
    assert rig.state.hosts == {}
