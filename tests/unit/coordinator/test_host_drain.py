"""Host drains and decommissions: the pure move plan (never over-commits a host, spread kept)
and drain steps, then HostDrains and HostDecommissions on an in-memory store with the real
placement writer and command dispatch (a second HostDrains resumes as a new leader would)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from memory_store import CurrentCache, Leading, MemoryStore
from test_coord_convert import version_record

from common.clock import FakeClock
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.event_types import COORDINATOR_ONLY, EventType
from common.resources import HostLedger, Resources
from common.stream_commands import StartInstance, StopInstance
from common.stream_messages import ObservedInstance
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.decommission import HostDecommissions, refusal
from coordinator.fleet.dispatch import CommandDispatch
from coordinator.fleet.drain_plan import (
    DrainRecord,
    DrainState,
    DrainView,
    plan_drain,
    plan_moves,
    skip_move,
    stop_drain,
)
from coordinator.fleet.drains import HostDrains, drain_of
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.instance_move import MovePhase, Moving
from coordinator.fleet.instance_mover import InstanceMover
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.placement import HostRoom
from coordinator.fleet.placement_writer import PlacementWriter
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostRecord, InstanceRecord, encode

GiB = 1 << 30
NOW = 1_700_000_000.0
LAYOUT = KeyLayout()


def inst(iid: str, unit: str = "web", host: str = "h1", cpu: float = 0.5,
         slot: str = "blue") -> InstanceRecord:
    return InstanceRecord(iid, "shop", unit, "1.0.0", slot, host, 20000,
                          Resources(cpu=cpu, memory=256 << 20), NOW)


# -- the move plan ---------------------------------------------------------------------------

def room(host: str, cpu: float, cordoned: bool = False,
         slots: dict[tuple[str, str, str], int] | None = None) -> HostRoom:
    return HostRoom.of(HostLedger(host, Resources(cpu, 8 * GiB, 100 * GiB, 10**9), {}),
                       slots=slots, cordoned=cordoned)


@given(
    st.lists(st.tuples(st.sampled_from(["web", "api", "db"]), st.sampled_from([0.25, 0.5, 1.5])),
             max_size=8),
    st.lists(st.tuples(st.sampled_from(["h2", "h3", "h4"]), st.sampled_from([0.5, 1.0, 3.0]),
                       st.booleans()), unique_by=lambda t: t[0], max_size=3),
)
def test_the_move_plan_never_over_commits_a_host(
        held: list[tuple[str, float]], hosts: list[tuple[str, float, bool]]) -> None:
    instances = [inst(f"i{n}", unit, cpu=cpu) for n, (unit, cpu) in enumerate(held)]
    rooms = [room("h1", 8.0), *(room(h, cpu, cordoned) for h, cpu, cordoned in hosts)]
    plan = plan_moves("h1", instances, rooms, {}, lost=())
    assert sorted(m.instance_id for m in plan.moves) == sorted(i.instance_id for i in instances)
    capacity = {r.host_id: r.capacity.cpu for r in rooms}
    used: dict[str, float] = {}
    by_id = {i.instance_id: i for i in instances}
    for move in plan.moves:
        if not move.to_host:
            assert move.why  # says why it cannot be placed
            continue
        assert move.to_host != "h1"  # never onto the drained host
        assert not next(r for r in rooms if r.host_id == move.to_host).cordoned
        used[move.to_host] = used.get(move.to_host, 0.0) + by_id[move.instance_id].resources.cpu
    for host_id, cpu in used.items():
        assert cpu <= capacity[host_id] + 1e-9


def test_the_move_plan_spreads_a_unit_and_names_what_fits_nowhere() -> None:
    instances = [inst("w1"), inst("w2"), inst("big", "db", cpu=6)]
    plan = plan_moves("h1", instances, [room("h1", 8), room("h2", 4), room("h3", 4)], {})
    targets = {m.instance_id: m.to_host for m in plan.moves}
    assert {targets["w1"], targets["w2"]} == {"h2", "h3"}  # one per host, not both on one
    (blocked,) = plan.unplaceable
    assert blocked.instance_id == "big" and "insufficient cpu" in blocked.why


# -- the drain steps -------------------------------------------------------------------------

def drain(**changes: object) -> DrainRecord:
    return replace(DrainRecord("h1", DrainState.DRAINING, NOW), **changes)  # type: ignore[arg-type]


def test_one_move_goes_place_start_route_settle_stop_then_drained() -> None:
    old = inst("w1")
    record, action = plan_drain(drain(), DrainView([old]), NOW)
    assert action.kind == "place" and action.instance == old
    assert record.moving is not None and record.moving.phase is MovePhase.PLACING
    new = inst("w9", host="h2")
    record = replace(record, moving=replace(record.moving, new_id="w9", new_host="h2",
                                            phase=MovePhase.STARTING))
    view = DrainView([old], existing={"w1", "w9"})
    assert plan_drain(record, view, NOW + 1)[1].kind == "none"  # not healthy yet
    record, action = plan_drain(record, replace(view, healthy={"w9"}), NOW + 2)
    assert action.kind == "route" and action.unit == "shop/web"
    assert plan_drain(record, view, NOW + 3)[1].kind == "none"  # settling
    record, action = plan_drain(record, view, NOW + 4.5)
    assert (action.kind, action.instance_id) == ("stop_old", "w1")
    record, action = plan_drain(record, DrainView([], existing={"w9"}), NOW + 5)
    assert record.state is DrainState.DRAINED and record.moved_count == 1
    assert record.moved == ("w1 -> w9 on h2",) and new.host_id == "h2"


def test_a_new_leader_finds_the_replacement_by_its_marker() -> None:
    old = inst("w1")
    record = drain(moving=Moving("w1", "shop/web", MovePhase.PLACING, NOW))
    placed = replace(inst("w9", host="h2"), replaces="w1")
    record, action = plan_drain(record, DrainView([old], existing={"w1", "w9"},
                                                  replacement={"w1": placed}), NOW + 1)
    assert record.moving is not None and record.moving.new_id == "w9"
    assert record.moving.new_host == "h2" and action.kind == "none"
    # without a replacement recorded, it places (again)
    again = drain(moving=Moving("w1", "shop/web", MovePhase.PLACING, NOW))
    assert plan_drain(again, DrainView([old]), NOW)[1].kind == "place"


def test_a_replacement_that_fails_is_stopped_and_the_instance_skipped_with_why() -> None:
    record = drain(moving=Moving("w1", "shop/web", MovePhase.STARTING, NOW, "w9", "h2"))
    view = DrainView([inst("w1")], existing={"w1", "w9"}, start_errors={"w9": "pull failed"})
    record, action = plan_drain(record, view, NOW + 1)
    assert (action.kind, action.instance_id) == ("stop_new", "w9")
    assert "pull failed" in record.skipped["w1"] and record.moving is None
    # only a skipped instance left: the drain is blocked, naming it and why
    record, _ = plan_drain(record, DrainView([inst("w1")]), NOW + 2)
    assert record.state is DrainState.BLOCKED
    assert "shop/web w1" in record.message and "pull failed" in record.message


def test_a_paused_instance_is_not_moved_and_named_when_only_it_is_left() -> None:
    view = DrainView([replace(inst("a1", "api"), paused=True), inst("w1")])
    record, action = plan_drain(drain(), view, NOW)
    assert action.kind == "place" and action.instance is not None
    assert action.instance.instance_id == "w1"
    record, _ = plan_drain(drain(), DrainView([replace(inst("a1", "api"), paused=True)]), NOW)
    assert record.state is DrainState.BLOCKED
    assert "shop/api a1 (paused: resume it, or stop its unit, to move it)" in record.message


def test_units_in_a_rollout_wait_while_the_others_move() -> None:
    view = DrainView([inst("a1", "api"), inst("w1")], in_rollout={("shop", "api")})
    record, action = plan_drain(drain(), view, NOW)
    assert action.instance is not None and action.instance.instance_id == "w1"
    record, action = plan_drain(drain(), DrainView([inst("a1", "api")],
                                                   in_rollout={("shop", "api")}), NOW)
    assert action.kind == "none" and record.state is DrainState.DRAINING
    assert "waiting for the active rollout of shop/api" in record.message


def test_the_deadline_stops_without_forcing_and_names_what_is_left() -> None:
    record = drain(deadline_at=NOW + 10,
                   moving=Moving("w1", "shop/web", MovePhase.ROUTED, NOW, "w9", "h2"))
    view = DrainView([inst("w1"), inst("w2")], existing={"w1", "w2", "w9"})
    record, action = plan_drain(record, view, NOW + 10)
    assert record.state is DrainState.STOPPED and record.moving is None
    assert (action.kind, action.instance_id) == ("stop_new", "w9")  # the old one stays
    assert "deadline reached" in record.message
    assert "shop/web w1" in record.message and "shop/web w2" in record.message


def test_stopping_mid_move_undoes_it_unless_the_old_one_is_already_stopping() -> None:
    view = DrainView([inst("w1")], existing={"w1", "w9"},
                     replacement={"w1": replace(inst("w9", host="h2"), replaces="w1")})
    placing = drain(moving=Moving("w1", "shop/web", MovePhase.PLACING, NOW))
    record, action = stop_drain(placing, view, NOW, "drain stopped: the host was uncordoned")
    assert (action.kind, action.instance_id) == ("stop_new", "w9")  # found by its mark
    assert record.state is DrainState.STOPPED and "uncordoned" in record.message
    stopping = drain(moving=Moving("w1", "shop/web", MovePhase.STOPPING, NOW, "w9", "h2"))
    assert stop_drain(stopping, view, NOW)[1].kind == "none"


@given(st.builds(DrainRecord, host_id=st.sampled_from(["h1", "x.y"]),
                 state=st.sampled_from(list(DrainState)), started_at=st.floats(0, 2e9),
                 deadline_at=st.floats(0, 2e9), moved_count=st.integers(0, 99),
                 moved=st.lists(st.text(max_size=8, alphabet=st.characters(
                     blacklist_categories=["Cs"]))).map(tuple),
                 skipped=st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["x"])),
                 moving=st.none() | st.builds(Moving, old_id=st.just("w1"), unit=st.just("s/w"),
                                              phase=st.sampled_from(list(MovePhase)),
                                              since=st.floats(0, 2e9))))
def test_the_record_reads_back_as_written(record: DrainRecord) -> None:
    assert DrainRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_drain_events_are_the_coordinators_alone() -> None:
    assert {EventType.HOST_DRAIN_STARTED, EventType.HOST_DRAIN_ENDED,
            EventType.HOST_DECOMMISSIONED} <= COORDINATOR_ONLY


# -- on an in-memory store -------------------------------------------------------------------

class Known:
    """Instance health as agents would report it (the test decides)."""

    def __init__(self) -> None:
        self.healthy: set[str] = set()

    def known_state(self, instance_id: str) -> ObservedInstance | None:
        if instance_id not in self.healthy:
            return None
        return ObservedInstance(instance_id, "", "shop", "web", "1.0.0", "blue", "running", 1.0)


class Rig:
    def __init__(self, h2_cpu: float = 4.0) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        self.fleet = Fleet()
        self.clock = FakeClock(NOW)
        self.writes = FencedWrites(self.store, Leading(), CurrentCache())
        self.events = EventLog(self.writes, LAYOUT, self.state, self.clock)
        self.placement = PlacementWriter(self.state, LAYOUT, self.writes,
                                         KnownFleet(self.state, self.fleet), self.events,
                                         self.clock)
        self.dispatch = CommandDispatch(self.state, LAYOUT, self.writes, self.fleet, Known(),
                                        self.placement, self.clock, stop_grace_s=5.0)
        self.known = Known()
        self.hosts = HostRecords(self.store, self.writes, LAYOUT, self.state, self.clock, 5)
        self.sessions: dict[str, HostSession] = {}
        self.store.put(LAYOUT.version("shop", "web", "1.0.0"), encode(version_record()))
        for host_id, cpu in (("h1", 4.0), ("h2", h2_cpu)):
            record = HostRecord(host_id, "b1", "127.0.0.2", Resources(cpu=cpu, memory=4 * GiB))
            self.store.put(LAYOUT.host(host_id), encode(record))
            session = HostSession(host_id, "b1", "127.0.0.2", 0.0)
            self.fleet.connect(session, (), (), 0.0)
            self.sessions[host_id] = session
        self.drains = self.new_leader()
        self.decommissions = HostDecommissions(
            state=self.state, layout=LAYOUT, writes=self.writes, hosts=self.hosts,
            fleet=self.fleet, events=self.events, clock=self.clock)

    def new_leader(self) -> HostDrains:
        return HostDrains(state=self.state, layout=LAYOUT, writes=self.writes,
                          events=self.events,
                          cordons=HostCordons(self.state, LAYOUT, self.writes, self.events),
                          mover=InstanceMover(self.state, self.placement, self.dispatch,
                                              self.known),
                          clock=self.clock, settle=1.0)

    async def on_h1(self, n: int) -> list[InstanceRecord]:
        placed = []
        for _ in range(n):  # h2 cordoned meanwhile so both land on h1
            placed += await self.placement.place("shop", "web", "1.0.0", "blue", 1, "b1")
        assert {p.host_id for p in placed} == {"h1"}
        return placed

    def stops(self, host_id: str) -> list[StopInstance]:
        session, found = self.sessions[host_id], []
        while not session._outbox.empty():
            outgoing = session._outbox.get_nowait()
            assert outgoing is not None
            if isinstance(outgoing.command, StopInstance):
                found.append(outgoing.command)
            elif isinstance(outgoing.command, StartInstance):
                self.known.healthy.add(outgoing.command.instance_id)  # it comes up healthy
        return found

    async def run(self, drains: HostDrains, rounds: int) -> None:
        for _ in range(rounds):
            await drains.tick()
            self.stops("h2")
            self.clock.advance(1.0)


async def place_on_h1(rig: Rig, n: int) -> list[InstanceRecord]:
    cordons = HostCordons(rig.state, LAYOUT, rig.writes, rig.events)
    await cordons.cordon("h2")
    placed = await rig.on_h1(n)
    await cordons.uncordon("h2")
    return placed


async def test_a_drain_moves_everything_then_the_host_is_decommissioned() -> None:
    rig = Rig()
    old = await place_on_h1(rig, 2)
    started = await rig.drains.start("h1", deadline_s=600)
    assert started.started and rig.state.hosts["h1"].value.cordoned
    assert [m.to_host for m in started.plan.moves] == ["h2", "h2"]
    with pytest.raises(FailedPrecondition, match="still placed on it"):
        await rig.decommissions.decommission("h1")
    await rig.run(rig.drains, 2)  # the first move is routed, not yet stopped
    await rig.run(rig.new_leader(), 30)  # a new leader carries on from the record
    record = drain_of(rig.state, "h1")
    assert record is not None and record.state is DrainState.DRAINED, record
    assert record.moved_count == 2
    assert not rig.state.instances_on("h1")
    assert len(rig.state.instances_on("h2")) == 2
    stopped = rig.stops("h1")
    assert sorted(s.instance_id for s in stopped) == sorted(o.instance_id for o in old)
    assert all(s.drain for s in stopped)
    types = [e.type for e in rig.state.event_history()]
    assert EventType.HOST_DRAIN_STARTED in types and EventType.HOST_DRAIN_ENDED in types
    done = await rig.decommissions.decommission("h1")
    assert done.host.host_id == "h1"
    assert "h1" not in rig.state.hosts and "h1" not in rig.state.allocs
    assert "h1" not in rig.state.drains and "h1" not in rig.fleet.sessions
    assert "decommissioned" in refusal(rig.state, "h1") and refusal(rig.state, "h2") == ""
    assert rig.state.event_history()[-1].type == EventType.HOST_DECOMMISSIONED


async def test_a_drain_that_cannot_place_says_what_and_why() -> None:
    rig = Rig(h2_cpu=0.25)
    await place_on_h1(rig, 1)
    started = await rig.drains.start("h1")
    (blocked,) = started.plan.unplaceable
    assert "insufficient cpu" in blocked.why
    await rig.run(rig.drains, 3)
    record = drain_of(rig.state, "h1")
    assert record is not None and record.state is DrainState.BLOCKED
    assert "shop/web" in record.message and "insufficient cpu" in record.message
    assert len(rig.state.instances_on("h1")) == 1  # nothing forced


async def test_refusals_unknown_host_bad_deadline_undrained_and_uncordoned() -> None:
    rig = Rig()
    with pytest.raises(NotFound, match="does not exist"):
        await rig.drains.start("nope")
    with pytest.raises(InvalidArgument, match="deadline"):
        await rig.drains.start("h1", deadline_s=-1)
    with pytest.raises(NotFound):
        await rig.decommissions.decommission("nope")
    with pytest.raises(FailedPrecondition, match="not cordoned"):
        await rig.decommissions.decommission("h2")
    again = await rig.drains.start("h2")
    assert (await rig.drains.start("h2")).started is False and again.started
    await HostCordons(rig.state, LAYOUT, rig.writes, rig.events).uncordon("h2")
    await rig.drains.tick()
    record = drain_of(rig.state, "h2")
    assert record is not None and record.state is DrainState.STOPPED
    assert "uncordoned" in record.message


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from([0.5, 1.0, 3.0])),
                min_size=1, max_size=60))
def test_an_old_instance_is_stopped_only_after_its_healthy_replacement_was_routed(
        steps: list[tuple[bool, bool, float]]) -> None:
    """Whatever the replacements do (healthy or not, placed or not) and however time goes,
    the drain stops an old instance only once its replacement was healthy and routed for
    the settle time, and never stops an instance it did not move."""
    on_host = {i.instance_id: i for i in (inst("w1"), inst("w2"), inst("w3"))}
    existing: set[str] = set(on_host)
    healthy: set[str] = set()
    routed_at: dict[str, float] = {}  # old id -> when its healthy replacement was routed
    record, now, serial = drain(), NOW, 0
    for becomes_healthy, placeable, wait in steps:
        view = DrainView(list(on_host.values()), existing=existing, healthy=healthy)
        record, action = plan_drain(record, view, now, settle=1.0, start_timeout=5.0)
        moving = record.moving
        if action.kind == "place":
            assert moving is not None and action.instance is not None
            if placeable:
                serial += 1
                new_id = f"n{serial}"
                existing.add(new_id)
                record = replace(record, moving=replace(moving, new_id=new_id, new_host="h2",
                                                        phase=MovePhase.STARTING, since=now))
            else:
                record = skip_move(record, moving.old_id, "no room")
        elif action.kind == "route":
            assert moving is not None and moving.new_id in healthy
            routed_at[moving.old_id] = now
        elif action.kind == "stop_old":
            assert now - routed_at[action.instance_id] >= 1.0
            on_host.pop(action.instance_id)
            existing.discard(action.instance_id)
        elif action.kind == "stop_new":
            assert action.instance_id not in on_host
            existing.discard(action.instance_id)
        if record.moving is not None and record.moving.new_id and becomes_healthy:
            healthy.add(record.moving.new_id)
        now += wait
    stopping = record.moving is not None and record.moving.old_id not in on_host
    assert record.moved_count + stopping + len(on_host) == 3  # each instance counted once
