"""PlacementWriter and CommandDispatch on an in-memory store: one transaction records
instances with their hosts' ledgers, a lost compare is decided again, a stop removes the
instance and its allocation before its host is told, and routes follow."""

from __future__ import annotations

from dataclasses import replace

import pytest
from memory_store import CurrentCache, Leading, MemoryStore
from test_coord_convert import version_record

from common.clock import FakeClock
from common.errors import Conflict
from common.resources import Resources
from common.stream_commands import AgentCommand, SetRoute, StartInstance, StopInstance
from coordinator.fleet.dispatch import CommandDispatch
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.placement_writer import PlacementWriter
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.etcd_records import EtcdRolloutRecords
from coordinator.rollouts.record import Phase, encode_record
from coordinator.rollouts.settings import RolloutSettings
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import CAS_ATTEMPTS, FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostRecord, UnitRecord, encode, encode_allocations

LAYOUT = KeyLayout()


class Rig:
    def __init__(self) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        self.fleet = Fleet()
        clock = FakeClock()
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        known = KnownFleet(self.state, self.fleet)
        events = EventLog(writes, LAYOUT, self.state, clock)
        self.placement = PlacementWriter(self.state, LAYOUT, writes, known, events, clock)
        self.dispatch = CommandDispatch(self.state, LAYOUT, writes, self.fleet, known,
                                        self.placement, clock, stop_grace_s=5.0)
        self.sessions: dict[str, HostSession] = {}
        version = version_record()
        self.store.put(LAYOUT.version("shop", "web", "1.0.0"), encode(version))
        for host_id in ("h1", "h2"):
            record = HostRecord(host_id, "b1", "127.0.0.2", Resources(cpu=4, memory=4 << 30))
            self.store.put(LAYOUT.host(host_id), encode(record))
            session = HostSession(host_id, "b1", "127.0.0.2", 0.0)
            self.fleet.connect(session, (), (), 0.0)
            self.sessions[host_id] = session

    def sent(self, host_id: str) -> list[AgentCommand]:
        session = self.sessions[host_id]
        found: list[AgentCommand] = []
        while not session._outbox.empty():
            outgoing = session._outbox.get_nowait()
            assert outgoing is not None
            found.append(outgoing.command)
        return found


async def test_placement_records_instances_and_ledgers_in_one_transaction() -> None:
    rig = Rig()
    placed = await rig.placement.place("shop", "web", "1.0.0", "blue", 2, "b1")
    instance_commits = [t for t in rig.store.commits
                        if any(k.startswith(LAYOUT.instance("")) for k in t.puts)]
    assert len(instance_commits) == 1
    assert {r.instance_id for r in placed} == set(rig.state.instances)
    for record in placed:
        allocations, _ = rig.state.allocation_of(record.host_id)
        assert allocations[record.instance_id].port == record.port
    assert await rig.dispatch.start_instances(placed) == 2
    started = [c for h in ("h1", "h2") for c in rig.sent(h)]
    assert sorted(c.instance_id for c in started if isinstance(c, StartInstance)) \
        == sorted(r.instance_id for r in placed)


async def test_a_ledger_changed_meanwhile_is_read_again_and_placement_retried() -> None:
    rig = Rig()
    interfered: list[int] = []

    def another_writer() -> None:
        if not interfered:  # the first decision is made on a ledger about to change
            interfered.append(rig.store.put(LAYOUT.alloc("h1"), encode_allocations({})))
            rig.store.put(LAYOUT.alloc("h2"), encode_allocations({}))

    rig.store.before_commit = another_writer
    placed = await rig.placement.place("shop", "web", "1.0.0", "blue", 1, "b1")
    assert interfered and set(rig.state.instances) == {placed[0].instance_id}


async def test_a_placement_that_keeps_losing_says_so() -> None:
    rig = Rig()
    def another_writer() -> None:
        for host_id in ("h1", "h2"):
            rig.store.put(LAYOUT.alloc(host_id), encode_allocations({}))

    rig.store.before_commit = another_writer
    with pytest.raises(Conflict, match=rf"placing shop/web kept conflicting .*"
                                       rf"\({CAS_ATTEMPTS} attempts\)"):
        await rig.placement.place("shop", "web", "1.0.0", "blue", 1, "b1")
    assert rig.state.instances == {}


async def test_stop_removes_instance_and_allocation_then_tells_its_host() -> None:
    rig = Rig()
    [record] = await rig.placement.place("shop", "web", "1.0.0", "blue", 1, "b1")
    await rig.dispatch.set_split("shop", "web", {"1.0.0": 100.0}, "b1", 18080, "/healthz")
    for host_id in ("h1", "h2"):
        rig.sent(host_id)  # what placing and routing sent so far

    await rig.dispatch.stop_instance(record.instance_id)

    assert record.instance_id not in rig.state.instances
    assert record.instance_id not in rig.state.allocation_of(record.host_id)[0]
    commands = rig.sent(record.host_id)
    assert isinstance(commands[0], SetRoute), "out of the route before it stops"
    assert commands[-1] == StopInstance(record.instance_id, 5.0, True)


async def test_routes_carry_the_stable_and_previous_stable_versions_hosts_keep() -> None:
    rig = Rig()
    clock = FakeClock()
    writes = FencedWrites(rig.store, Leading(), CurrentCache())
    records = EtcdRolloutRecords(writes, LAYOUT, rig.state,
                                 EventLog(writes, LAYOUT, rig.state, clock), clock)
    rig.dispatch.protected = records
    await rig.placement.place("shop", "web", "1.0.0", "blue", 1, "b1")
    await rig.dispatch.set_split("shop", "web", {"1.0.0": 100.0}, "b1", 18080, "/healthz")
    routes = [c for c in rig.sent("h1") if isinstance(c, SetRoute)]
    assert routes and routes[-1].protected_versions == ()  # no stable version yet
    rig.sent("h2")

    rig.store.put(LAYOUT.unit("shop", "web"), encode(UnitRecord("shop", "web", "running",
                                                                stable_version="1.1.0")))
    promoted = replace(new_rollout("r1", "shop", "web", "b1", "1.0.0", "1.1.0",
                                   RolloutSettings(), clock.now()), phase=Phase.PROMOTED)
    rig.store.put(LAYOUT.rollout("shop", "web", "r1"), encode_record(promoted))
    await rig.dispatch.set_route("shop", "web")
    for host_id in ("h1", "h2"):
        [route] = [c for c in rig.sent(host_id) if isinstance(c, SetRoute)]
        assert route.protected_versions == ("1.1.0", "1.0.0")
