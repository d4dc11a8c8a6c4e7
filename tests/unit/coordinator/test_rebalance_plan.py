"""The even-spread plan (hypothesis) and the rebalance steps (fleet/rebalance_plan.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from common.resources import Resources
from coordinator.fleet.instance_move import MovePhase, MoveView, Moving
from coordinator.fleet.placement import HostRoom
from coordinator.fleet.rebalance_plan import (
    RebalanceRecord,
    RebalanceState,
    RebalanceView,
    SpreadMove,
    plan_rebalance,
    plan_spread,
    spread_even,
)
from coordinator.state.records import InstanceRecord

GiB = 1 << 30
NOW = 1_700_000_000.0
HOSTS = ("h1", "h2", "h3", "h4")


def inst(iid: str, host: str, unit: str = "web", cpu: float = 0.5, port: int = 20000
         ) -> InstanceRecord:
    return InstanceRecord(iid, "shop", unit, "1.0.0", "blue", host, port,
                          Resources(cpu=cpu, memory=256 << 20), NOW)


def rooms_for(instances: list[InstanceRecord], capacity: dict[str, float],
              background: dict[str, float] | None = None,
              cordoned: frozenset[str] = frozenset()) -> list[HostRoom]:
    rooms = []
    for host, cpu in capacity.items():
        mine = [i for i in instances if i.host_id == host]
        used = sum(i.resources.cpu for i in mine) + (background or {}).get(host, 0.0)
        slots = Counter((i.apartment, i.unit, i.slot) for i in mine)
        rooms.append(HostRoom(host, Resources(cpu, 64 * GiB), Resources(used, 0),
                              frozenset(i.port for i in mine), dict(slots), host in cordoned))
    return rooms


@st.composite
def fleets(draw: st.DrawFn, roomy: bool) -> tuple[list[InstanceRecord], list[HostRoom]]:
    hosts = HOSTS[:draw(st.integers(2, 4))]
    count = draw(st.integers(0, 9))
    units = draw(st.lists(st.sampled_from(["web", "api"]), min_size=count, max_size=count))
    cpus = draw(st.lists(st.sampled_from([0.25, 0.5, 1.0]), min_size=count, max_size=count))
    where = draw(st.lists(st.sampled_from(hosts), min_size=count, max_size=count))
    instances = [inst(f"i{n}", h, u, c, 20000 + n)
                 for n, (h, u, c) in enumerate(zip(where, units, cpus, strict=True))]
    capacity = {h: 100.0 if roomy else draw(st.sampled_from([1.0, 2.0, 4.0, 8.0]))
                for h in hosts}
    background = {h: 0.0 if roomy else draw(st.sampled_from([0.0, 0.5, 1.0])) for h in hosts}
    for h in hosts:  # what is placed fits where it is
        capacity[h] = max(capacity[h], background[h] + sum(
            i.resources.cpu for i in instances if i.host_id == h))
    return instances, rooms_for(instances, capacity, background)


def apply(instances: list[InstanceRecord], rooms: list[HostRoom],
          moves: tuple[SpreadMove, ...]) -> tuple[dict[str, InstanceRecord], dict[str, float]]:
    """The moves one after the other; asserts no host is ever over-committed."""
    where = {i.instance_id: i for i in instances}
    used = {r.host_id: r.allocated.cpu for r in rooms}
    capacity = {r.host_id: r.capacity.cpu for r in rooms}
    for move in moves:
        current = where[move.instance.instance_id]
        assert move.instance.host_id == current.host_id != move.to_host
        used[move.to_host] += current.resources.cpu  # the replacement, next to the old one
        assert used[move.to_host] <= capacity[move.to_host] + 1e-9, (move, used)
        used[current.host_id] -= current.resources.cpu  # then the old one stops
        where[current.instance_id] = replace(current, host_id=move.to_host)
    return where, used


def counts(where: dict[str, InstanceRecord], hosts: list[str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for i in where.values():
        out.setdefault(i.unit, Counter())[i.host_id] += 1
    for c in out.values():
        for h in hosts:
            c.setdefault(h, 0)
    return out


@settings(max_examples=200)
@given(fleets(roomy=False))
def test_the_plan_never_over_commits_and_ends_even_where_room_allows(
        fleet: tuple[list[InstanceRecord], list[HostRoom]]) -> None:
    instances, rooms = fleet
    moves = plan_spread(instances, rooms)
    where, used = apply(instances, rooms, moves)
    capacity = {r.host_id: r.capacity.cpu for r in rooms}
    for unit, per_host in counts(where, list(capacity)).items():
        for src, many in per_host.items():
            for dst, few in per_host.items():
                if many - few >= 2:  # left uneven only because nothing fits on dst
                    cpu = min(i.resources.cpu for i in where.values()
                              if i.unit == unit and i.host_id == src)
                    assert used[dst] + cpu > capacity[dst] + 1e-9, (unit, per_host, used)


@settings(max_examples=200)
@given(fleets(roomy=True))
def test_with_room_the_plan_ends_within_one_and_moves_the_minimum(
        fleet: tuple[list[InstanceRecord], list[HostRoom]]) -> None:
    instances, rooms = fleet
    hosts = [r.host_id for r in rooms]
    moves = plan_spread(instances, rooms)
    where, _ = apply(instances, rooms, moves)
    minimum = 0
    for per_host in counts(where, hosts).values():
        assert max(per_host.values()) - min(per_host.values()) <= 1, per_host
    for per_host in counts({i.instance_id: i for i in instances}, hosts).values():
        q, r = divmod(sum(per_host.values()), len(hosts))
        above = [c for c in per_host.values() if c > q]
        minimum += sum(c - q for c in above) - min(r, len(above))
    assert len(moves) == minimum, (moves, minimum)


@settings(max_examples=300)
@given(fleets(roomy=False), st.booleans())
def test_an_even_spread_needs_no_rooms_and_an_uneven_one_moves_where_room_allows(
        fleet: tuple[list[InstanceRecord], list[HostRoom]], roomy: bool) -> None:
    # spread_even is the leader's cheap check before it builds a building's rooms: it
    # must never call a unit even that plan_spread would move
    instances, rooms = fleet
    if roomy:
        rooms = [replace(r, capacity=Resources(100.0, 64 * GiB)) for r in rooms]
    even = spread_even(instances, {r.host_id for r in rooms if not r.cordoned})
    moves = plan_spread(instances, rooms)
    assert not (even and moves)
    if roomy:
        assert even == (moves == ())


def test_a_returned_host_gets_one_back_and_cordoned_hosts_are_left_alone() -> None:
    both = [inst("w1", "h1"), inst("w2", "h1", port=20001)]
    rooms = rooms_for(both, {"h1": 4, "h2": 4})
    (move,) = plan_spread(both, rooms)
    assert (move.instance.host_id, move.to_host) == ("h1", "h2")
    assert "h1 -> h2" in move.text
    cordoned = rooms_for(both, {"h1": 4, "h2": 4}, cordoned=frozenset({"h2"}))
    assert plan_spread(both, cordoned) == ()
    assert plan_spread(both[:1], rooms) == ()  # 1 and 0: even enough


# -- the rebalance steps ------------------------------------------------------------------


def running(**changes: object) -> RebalanceRecord:
    record = RebalanceRecord("shop", "web", RebalanceState.RUNNING, NOW, "requested")
    return replace(record, **changes)  # type: ignore[arg-type]


def test_a_rebalance_moves_one_at_a_time_then_is_done() -> None:
    old = inst("w2", "h1")
    plan = (SpreadMove(old, "h2"),)
    record, action = plan_rebalance(running(), RebalanceView(plan), NOW)
    assert (action.kind, action.onto, action.instance) == ("place", "h2", old)
    assert record.moving == Moving("w2", "shop/web", MovePhase.PLACING, NOW, new_host="h2")
    started = replace(record.moving, new_id="w9", phase=MovePhase.STARTING)
    record = replace(record, moving=started)
    new = inst("w9", "h2")
    view = MoveView(old, {"w2", "w9"}, {"w2": replace(new, replaces="w2")}, {"w9"})
    record, action = plan_rebalance(record, RebalanceView(plan, view), NOW + 1)
    assert action.kind == "route" and record.moving is not None
    assert record.moving.phase is MovePhase.ROUTED
    record, action = plan_rebalance(record, RebalanceView(plan, view), NOW + 5)
    assert (action.kind, action.instance_id) == ("stop_old", "w2")
    gone = MoveView(None, {"w9"})
    record, action = plan_rebalance(record, RebalanceView((), gone), NOW + 6)
    assert record.state is RebalanceState.DONE and record.moved_count == 1
    assert record.moved == ("w2 -> w9 on h2",) and action.kind == "none"


def test_a_rollout_or_drain_halts_it_and_undoes_the_move_under_way() -> None:
    old, new = inst("w2", "h1"), inst("w9", "h2", port=20001)
    moving = Moving("w2", "shop/web", MovePhase.STARTING, NOW, "w9", "h2")
    view = RebalanceView((SpreadMove(old, "h2"),), MoveView(old, {"w2", "w9"}, {"w2": new}),
                         halt="shop/web has an active rollout")
    record, action = plan_rebalance(running(moving=moving), view, NOW + 1)
    assert record.state is RebalanceState.STOPPED and record.moving is None
    assert record.message == "shop/web has an active rollout"
    assert (action.kind, action.instance_id) == ("stop_new", "w9")
    stopping = replace(moving, phase=MovePhase.STOPPING)  # past undoing: it finishes
    _, action = plan_rebalance(running(moving=stopping), view, NOW + 1)
    assert (action.kind, action.instance_id) == ("stop_old", "w2")


def test_a_failed_replacement_stops_the_rebalance_with_the_reason() -> None:
    old, new = inst("w2", "h1"), inst("w9", "h2", port=20001)
    moving = Moving("w2", "shop/web", MovePhase.STARTING, NOW, "w9", "h2")
    view = RebalanceView((SpreadMove(old, "h2"),),
                         MoveView(old, {"w2", "w9"}, {"w2": new}, (), {"w9": "pull failed"}))
    record, action = plan_rebalance(running(moving=moving), view, NOW + 1)
    assert record.state is RebalanceState.STOPPED and "pull failed" in record.message
    assert (action.kind, action.instance_id) == ("stop_new", "w9")
    assert RebalanceRecord.from_dict(record.to_dict()) == record
    assert RebalanceRecord.from_dict(running(moving=moving).to_dict()) == running(moving=moving)


def test_paused_instances_stay_where_they_are() -> None:
    instances = [replace(inst("a", "h1"), paused=True), replace(inst("b", "h1"), paused=True),
                 replace(inst("c", "h1"), paused=True)]
    rooms = rooms_for(instances, {"h1": 8.0, "h2": 8.0})
    assert plan_spread(instances, rooms) == ()  # a frozen unit is not moved
    mixed = [*instances[:2], inst("c", "h1"), inst("d", "h1")]
    moves = plan_spread(mixed, rooms_for(mixed, {"h1": 8.0, "h2": 8.0}))
    assert {m.instance.instance_id for m in moves} == {"d"}  # only running ones move
