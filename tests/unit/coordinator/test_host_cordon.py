"""Cordoned hosts: placement skips them and names them, the record field (old records read as
schedulable, registration keeps it), and the cordon writes on an in-memory store."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from memory_store import CurrentCache, Leading, MemoryStore

from common.clock import FakeClock
from common.errors import FailedPrecondition, InsufficientResources, InvalidArgument, NotFound
from common.event_types import COORDINATOR_ONLY, EventType
from common.resources import HostLedger, Resources
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.placement import HostRoom, PlacementRequest, place
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostRecord, decode, encode

GiB = 1 << 30
SMALL = Resources(cpu=0.5, memory=256 << 20)
NOW = 1_700_000_000.0
LAYOUT = KeyLayout()


def room(host: str, cordoned: bool = False, cpu: float = 4) -> HostRoom:
    ledger = HostLedger(host, Resources(cpu, 8 * GiB, 100 * GiB, 10**9), {})
    return HostRoom.of(ledger, cordoned=cordoned)


def request(n: int, resources: Resources = SMALL) -> PlacementRequest:
    return PlacementRequest("shop", "web", "blue", resources, tuple(f"i{k}" for k in range(n)),
                            "b1")


# -- placement -------------------------------------------------------------------------------

def test_two_replicas_skip_the_cordoned_host_and_land_on_the_other() -> None:
    placed = place(request(2), [room("h1", cordoned=True), room("h2")])
    assert [p.host_id for p in placed] == ["h2", "h2"]


def test_only_cordoned_hosts_refuse_naming_each() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        place(request(1), [room("h2", cordoned=True), room("h1", cordoned=True)])
    assert "no placeable host" in str(refused.value)
    assert "host h1 is cordoned, host h2 is cordoned" in str(refused.value)


def test_a_refusal_for_room_names_the_cordoned_host_it_skipped() -> None:
    with pytest.raises(InsufficientResources) as refused:
        place(request(1, Resources(cpu=3, memory=GiB)),
              [room("h1", cordoned=True), room("h2", cpu=2)])
    message = str(refused.value)
    assert "insufficient cpu" in message and "host h1 is cordoned" in message
    # the most free it reports is that of the placeable hosts only
    assert "the most free on one host is 2" in message


rooms_strategy = st.lists(
    st.builds(room, host=st.sampled_from(["a", "b", "c", "d", "e"]), cordoned=st.booleans(),
              cpu=st.sampled_from([0.25, 1.0, 4.0])),
    unique_by=lambda r: r.host_id, min_size=1, max_size=5)


@given(rooms_strategy, st.integers(1, 6))
def test_placing_with_cordoned_hosts_is_placing_without_them(rooms: list[HostRoom],
                                                               n: int) -> None:
    open_rooms = [r for r in rooms if not r.cordoned]

    def outcome(hosts: list[HostRoom]) -> object:
        try:
            return [(p.host_id, p.port) for p in place(request(n), hosts)]
        except (FailedPrecondition, InsufficientResources) as exc:
            return type(exc)

    got = outcome(rooms)
    assert got == outcome(open_rooms)
    if isinstance(got, list):
        assert not {h for h, _ in got} & {r.host_id for r in rooms if r.cordoned}


# -- the record ------------------------------------------------------------------------------

def host(host_id: str = "h1", **changes: object) -> HostRecord:
    record = HostRecord(host_id, "b1", "127.0.0.2", Resources(cpu=4, memory=4 * GiB))
    return replace(record, **changes)  # type: ignore[arg-type]


def test_a_record_written_before_cordons_existed_is_schedulable() -> None:
    raw = json.loads(encode(host()))
    del raw["cordoned"], raw["cordon_reason"]
    old = decode(HostRecord, json.dumps(raw).encode())
    assert old.cordoned is False and old.cordon_reason == ""
    cordoned = host(cordoned=True, cordon_reason="disk")
    assert decode(HostRecord, encode(cordoned)) == cordoned


def test_a_registration_keeps_the_stored_cordon_and_never_sets_one() -> None:
    stored = host(cordoned=True, cordon_reason="disk", registered_at=5.0)
    fresh = host(agent_version="2")
    assert fresh.keeping_cordon(stored).cordoned
    assert fresh.keeping_cordon(stored).cordon_reason == "disk"
    assert not host(cordoned=True).keeping_cordon(None).cordoned
    assert fresh.keeping_cordon(host()).cordoned is False
    # the cordon is not part of what a registration says
    assert host().same_registration(stored)


def test_cordon_events_are_the_coordinators_alone() -> None:
    assert {EventType.HOST_CORDONED, EventType.HOST_UNCORDONED} <= COORDINATOR_ONLY


# -- the writes ------------------------------------------------------------------------------

class Rig:
    def __init__(self) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        self.clock = FakeClock(NOW)
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        self.events = EventLog(writes, LAYOUT, self.state, self.clock)
        self.hosts = HostRecords(self.store, writes, LAYOUT, self.state, self.clock, 5)
        self.cordons = HostCordons(self.state, LAYOUT, writes, self.events)

    def put(self, record: HostRecord) -> None:
        self.store.put(LAYOUT.host(record.host_id), encode(record))

    def stored(self, host_id: str = "h1") -> HostRecord:
        return self.state.hosts[host_id].value

    def history(self) -> list[tuple[str, str, str]]:
        return [(e.type, e.host_id, e.details.get("reason", ""))
                for e in self.state.event_history()]


async def test_cordon_then_uncordon_each_once_with_its_event() -> None:
    rig = Rig()
    rig.put(host())
    result = await rig.cordons.cordon("h1", " disk failing ")
    assert result.changed and rig.stored().cordoned
    assert rig.stored().cordon_reason == "disk failing"
    commits = len(rig.store.commits)
    again = await rig.cordons.cordon("h1")  # idempotent: no write, reason kept
    assert not again.changed and len(rig.store.commits) == commits
    assert rig.stored().cordon_reason == "disk failing"
    assert (await rig.cordons.uncordon("h1")).changed
    assert not rig.stored().cordoned and rig.stored().cordon_reason == ""
    assert not (await rig.cordons.uncordon("h1")).changed
    assert rig.history() == [(EventType.HOST_CORDONED, "h1", "disk failing"),
                            (EventType.HOST_UNCORDONED, "h1", "")]


async def test_a_new_reason_updates_the_cordon() -> None:
    rig = Rig()
    rig.put(host(cordoned=True, cordon_reason="old"))
    assert (await rig.cordons.cordon("h1", "new")).changed
    assert rig.stored().cordon_reason == "new"


async def test_an_unknown_host_is_not_found_and_a_long_reason_is_refused() -> None:
    rig = Rig()
    with pytest.raises(NotFound, match="host 'nope' does not exist"):
        await rig.cordons.cordon("nope")
    with pytest.raises(NotFound, match="hosts list"):
        await rig.cordons.uncordon("nope")
    rig.put(host())
    with pytest.raises(InvalidArgument, match="at most 200 characters"):
        await rig.cordons.cordon("h1", "x" * 201)
    assert rig.store.commits == []


async def test_a_registration_racing_the_cordon_loses_neither() -> None:
    rig = Rig()
    rig.put(host())

    def registers() -> None:  # the agent re-registers between the read and the commit
        rig.store.before_commit = None
        rig.put(host(agent_version="2"))

    rig.store.before_commit = registers
    assert (await rig.cordons.cordon("h1", "maintenance")).changed
    assert rig.stored().cordoned and rig.stored().agent_version == "2"


async def test_registering_again_keeps_the_cordon() -> None:
    rig = Rig()
    rig.put(host())
    await rig.cordons.cordon("h1", "maintenance")

    def cordon_lifted_elsewhere() -> None:  # another write lands before the registration
        rig.store.before_commit = None
        rig.put(replace(rig.stored(), cordon_reason="still maintenance"))

    rig.store.before_commit = cordon_lifted_elsewhere
    await rig.hosts.register(host(agent_version="3"))
    assert rig.stored().agent_version == "3"
    assert rig.stored().cordoned and rig.stored().cordon_reason == "still maintenance"
