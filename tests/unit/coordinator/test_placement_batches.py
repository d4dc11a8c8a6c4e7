"""Placements past etcd's --max-txn-ops: cut into transactions that each fit, and a deploy
of many replicas recorded in several of them, every one guarded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from memory_store import CurrentCache, Leading, MemoryStore
from test_coord_convert import version_record

from common.clock import FakeClock
from common.errors import InsufficientResources
from common.resources import Resources
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.placement_batches import HOST_OPS, INSTANCE_OPS, fitting
from coordinator.fleet.placement_writer import PlacementWriter
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostRecord, encode
from coordinator.state.store import FENCE_OPS

LAYOUT = KeyLayout()


def _cost(host_ids: list[str]) -> int:
    return INSTANCE_OPS * len(host_ids) + HOST_OPS * len(set(host_ids))


hosts_strategy = st.lists(st.sampled_from([f"h{i}" for i in range(40)]), max_size=400)


@given(hosts_strategy, st.integers(min_value=0, max_value=300))
def test_the_prefix_taken_fits_and_one_more_would_not(host_ids: list[str], budget: int) -> None:
    count = fitting(host_ids, budget)
    assert _cost(host_ids[:count]) <= budget
    if count < len(host_ids):
        assert _cost(host_ids[:count + 1]) > budget


@given(hosts_strategy, st.integers(min_value=INSTANCE_OPS + HOST_OPS, max_value=300))
def test_batches_taken_one_after_another_cover_every_placement_once(
        host_ids: list[str], budget: int) -> None:
    start, batches = 0, []
    while start < len(host_ids):
        count = fitting(host_ids[start:], budget)
        assert count >= 1  # one instance on a new host always fits
        batches.append(host_ids[start:start + count])
        start += count
    assert [h for batch in batches for h in batch] == host_ids
    assert all(_cost(batch) <= budget for batch in batches)


class Rig:
    def __init__(self, hosts: int, cpu: float = 64) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        self.fleet = Fleet()
        clock = FakeClock()
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        known = KnownFleet(self.state, self.fleet)
        events = EventLog(writes, LAYOUT, self.state, clock)
        self.placement = PlacementWriter(self.state, LAYOUT, writes, known, events, clock)
        self.store.put(LAYOUT.version("shop", "web", "1.0.0"), encode(version_record()))
        for index in range(hosts):
            host_id = f"h{index:02d}"
            record = HostRecord(host_id, "b1", "127.0.0.2",
                                Resources(cpu=cpu, memory=int(cpu) << 30))
            self.store.put(LAYOUT.host(host_id), encode(record))
            self.fleet.connect(HostSession(host_id, "b1", "127.0.0.2", 0.0), (), (), 0.0)

    def instance_commits(self) -> list[int]:
        return [t.size for t in self.store.commits
                if any(k.startswith(LAYOUT.instance("")) for k in t.puts)]


async def test_three_hundred_replicas_are_recorded_in_transactions_within_the_limit() -> None:
    rig = Rig(hosts=40)
    placed = await rig.placement.place("shop", "web", "1.0.0", "blue", 300, "b1")
    assert len(placed) == 300 == len(rig.state.instances)
    assert len({r.instance_id for r in placed}) == 300
    sizes = rig.instance_commits()
    assert len(sizes) > 1
    assert all(size + FENCE_OPS <= rig.store.max_txn_ops for size in sizes)
    ledgered = [i for h in range(40) for i in rig.state.allocation_of(f"h{h:02d}")[0]]
    assert sorted(ledgered) == sorted(r.instance_id for r in placed)
    ports = [(r.host_id, r.port) for r in placed]
    assert len(set(ports)) == 300
    spread = {h: sum(1 for r in placed if r.host_id == h) for h in {r.host_id for r in placed}}
    assert max(spread.values()) - min(spread.values()) <= 1  # decided again, still even


async def test_a_later_batch_without_room_is_refused_and_earlier_ones_stay() -> None:
    rig = Rig(hosts=40, cpu=4)  # 8 instances of 0.5 cpu per host: 320 in all

    def grab() -> None:
        # another placement fills most hosts between this placement's transactions
        if len(rig.store.commits) == 1:
            for index in range(40):
                key = LAYOUT.host(f"h{index:02d}")
                record = HostRecord(f"h{index:02d}", "b1", "127.0.0.2",
                                    Resources(cpu=1, memory=4 << 30))
                rig.store.put(key, encode(record))

    rig.store.before_commit = grab
    with pytest.raises(InsufficientResources):
        await rig.placement.place("shop", "web", "1.0.0", "blue", 300, "b1")
    assert 0 < len(rig.state.instances) < 300
