"""Unit rebalances on an in-memory store (coordinator/fleet/rebalances.py): asked for, then
automatic after the grace, halted by a cordon or a drain; a new leader carries on."""

from __future__ import annotations

import pytest
from test_host_drain import LAYOUT, Rig, place_on_h1

from common.errors import FailedPrecondition, NotFound
from common.event_types import EventType
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.instance_mover import InstanceMover
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.rebalance_plan import RebalanceState
from coordinator.fleet.rebalances import OPERATOR, UnitRebalances, rebalance_of
from coordinator.state.records import UnitRecord, encode


def rebalancer(rig: Rig, grace: float = 0.0) -> UnitRebalances:
    return UnitRebalances(state=rig.state, layout=LAYOUT, writes=rig.writes, events=rig.events,
                          mover=InstanceMover(rig.state, rig.placement, rig.dispatch, rig.known),
                          hosts=KnownFleet(rig.state, rig.fleet), clock=rig.clock, grace=grace,
                          settle=1.0)


async def uneven(rig: Rig) -> None:
    """shop/web running with both replicas on h1."""
    await place_on_h1(rig, 2)
    rig.store.put(LAYOUT.unit("shop", "web"), encode(UnitRecord(
        "shop", "web", "running", "1.0.0", "1.0.0", "b1", 2)))


async def run(rig: Rig, rebalances: UnitRebalances, rounds: int) -> None:
    for _ in range(rounds):
        await rebalances.tick()
        rig.stops("h1")
        rig.stops("h2")
        rig.clock.advance(1.0)


def spread(rig: Rig) -> list[int]:
    return sorted(len(rig.state.instances_on(h)) for h in ("h1", "h2"))


async def test_an_asked_rebalance_moves_one_back_and_a_new_leader_finishes_it() -> None:
    rig = Rig()
    await uneven(rig)
    first = rebalancer(rig)
    started = await first.start("shop", "web")
    assert started.started and started.record.reason == OPERATOR
    assert [(m.instance.host_id, m.to_host) for m in started.plan] == [("h1", "h2")]
    assert (await first.start("shop", "web")).started is False  # already running
    await run(rig, first, 2)  # placed and started, not yet stopped
    await run(rig, rebalancer(rig), 10)  # a new leader carries on from the record
    record = rebalance_of(rig.state, "shop", "web")
    assert record is not None and record.state is RebalanceState.DONE, record
    assert record.moved_count == 1 and spread(rig) == [1, 1]
    types = [e.type for e in rig.state.event_history()]
    assert EventType.UNIT_REBALANCE_STARTED in types and EventType.UNIT_REBALANCE_ENDED in types
    again = await first.start("shop", "web")  # even now: done at once
    assert again.record.state is RebalanceState.DONE and not again.plan


async def test_the_automatic_rebalance_waits_for_the_grace_and_a_placeable_building() -> None:
    rig = Rig()
    await uneven(rig)
    cordons = HostCordons(rig.state, LAYOUT, rig.writes, rig.events)
    await cordons.cordon("h2", "maintenance")
    rebalances = rebalancer(rig, grace=5.0)
    await run(rig, rebalances, 8)
    assert rebalance_of(rig.state, "shop", "web") is None  # h2 cordoned: nothing to do
    await cordons.uncordon("h2")
    await run(rig, rebalances, 4)
    assert rebalance_of(rig.state, "shop", "web") is None  # within the grace
    await run(rig, rebalances, 15)
    record = rebalance_of(rig.state, "shop", "web")
    assert record is not None and record.reason.startswith("automatic: spread uneven for")
    assert record.state is RebalanceState.DONE and spread(rig) == [1, 1]


async def test_refused_for_an_unknown_unit_and_halted_by_a_drain() -> None:
    rig = Rig()
    await uneven(rig)
    rebalances = rebalancer(rig)
    with pytest.raises(NotFound, match="does not exist"):
        await rebalances.start("shop", "nope")
    await rebalances.start("shop", "web")
    await run(rig, rebalances, 1)  # placing the replacement on h2
    await rig.drains.start("h2")
    await run(rig, rebalances, 2)
    record = rebalance_of(rig.state, "shop", "web")
    assert record is not None and record.state is RebalanceState.STOPPED
    assert record.message == "host h2 is being drained"
    with pytest.raises(FailedPrecondition, match="being drained"):
        await rebalances.start("shop", "web")
    assert await rebalances.start_all() == []  # the drain holds every unit back


async def test_the_automatic_check_yields_over_many_units_and_still_finds_the_uneven_one(
) -> None:
    rig = Rig()
    await uneven(rig)
    for i in range(450):  # sorted before shop/web: the check yields twice before reaching it
        rig.store.put(LAYOUT.unit("a", f"u{i:03d}"), encode(UnitRecord(
            "a", f"u{i:03d}", "running", "1.0.0", "1.0.0", "b1", 1)))
    rebalances = rebalancer(rig, grace=5.0)
    await run(rig, rebalances, 25)
    record = rebalance_of(rig.state, "shop", "web")
    assert record is not None and record.reason.startswith("automatic: spread uneven for")
    assert [key for key in rig.state.rebalances] == [("shop", "web")]
