"""A registering host keeps the liveness lease it has: no etcd round trip at registration,
refreshed by the liveness tick a little later (coordinator/fleet/host_records.py)."""

from __future__ import annotations

import asyncio

from common.clock import FakeClock
from coordinator.fleet.host_records import ADOPTED_FIRST_REFRESH, HostRecords
from coordinator.state.cluster_state import ClusterState
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.store import Txn
from tests.unit.coordinator.memory_store import CurrentCache, Leading, MemoryStore

LAYOUT = KeyLayout()
TTL = 24


class CountingStore(MemoryStore):
    def __init__(self, state: ClusterState) -> None:
        super().__init__(state)
        self.refreshed: list[int] = []
        self.granted = 0
        self.remaining = 10

    async def grant_lease(self, ttl: int) -> int:
        self.granted += 1
        return 500 + self.granted

    async def refresh_lease(self, lease_id: int) -> int:
        self.refreshed.append(lease_id)
        return self.remaining


class Rig:
    def __init__(self) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = CountingStore(self.state)
        self.clock = FakeClock()
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        self.hosts = HostRecords(self.store, writes, LAYOUT, self.state, self.clock, TTL)

    def alive(self, host_id: str, lease: int) -> None:
        """The previous leader's liveness key for ``host_id``, on ``lease``."""
        asyncio.run(self.store.commit(Txn().put(LAYOUT.alive(host_id), b"{}", lease)))


def test_the_previous_leaders_lease_is_kept_and_refreshed_by_the_tick_not_at_once() -> None:
    rig = Rig()
    for index in range(50):
        rig.alive(f"h{index}", 100 + index)
    assert all(rig.hosts.adopt_lease(f"h{index}") for index in range(50))
    assert rig.store.refreshed == [] and rig.store.granted == 0
    hosts = [f"h{index}" for index in range(50)]
    asyncio.run(rig.hosts.refresh_leases(hosts))
    assert rig.store.refreshed == []  # not due yet: a takeover's registrations go first
    rig.clock.advance(ADOPTED_FIRST_REFRESH[1])
    asyncio.run(rig.hosts.refresh_leases(hosts))
    assert sorted(rig.store.refreshed) == list(range(100, 150))


def test_an_adopted_lease_that_ran_out_is_replaced_at_its_first_refresh() -> None:
    rig = Rig()
    rig.alive("h1", 7)
    assert rig.hosts.adopt_lease("h1")
    rig.store.remaining = 0
    rig.clock.advance(ADOPTED_FIRST_REFRESH[1])
    asyncio.run(rig.hosts.refresh_leases(["h1"]))
    assert rig.store.granted == 1
    assert rig.state.alive["h1"] == 501


def test_no_lease_or_one_that_may_have_run_out_is_not_adopted() -> None:
    rig = Rig()
    assert not rig.hosts.adopt_lease("h1")  # never alive: ensure_lease grants one
    asyncio.run(rig.hosts.ensure_lease("h1"))
    assert rig.hosts.adopt_lease("h1")  # refreshed just now
    rig.clock.advance(TTL / 2)
    assert not rig.hosts.adopt_lease("h1")  # silent for half a TTL: ask etcd


def test_thousands_of_due_leases_are_refreshed_and_expired_ones_replaced() -> None:
    rig = Rig()
    hosts = [f"h{index}" for index in range(1200)]
    for index, host_id in enumerate(hosts):
        rig.alive(host_id, 1000 + index)
        assert rig.hosts.adopt_lease(host_id)
    rig.clock.advance(ADOPTED_FIRST_REFRESH[1])
    asyncio.run(rig.hosts.refresh_leases(hosts))
    assert sorted(rig.store.refreshed) == [1000 + index for index in range(len(hosts))]
    rig.store.remaining = 0  # every lease ran out (etcd was away too long)
    rig.clock.advance(TTL)
    asyncio.run(rig.hosts.refresh_leases(hosts[:3]))
    assert rig.store.granted == 3
    assert {rig.state.alive[h] for h in hosts[:3]} == {501, 502, 503}
